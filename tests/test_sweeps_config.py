"""Sweep config: composition, grid, validation errors that name the key, before any Ray or MLflow work."""

import pytest
import torch

from sweeps.config import ConfigError, with_overrides
from sweeps.config import layer_names_for as resolve
from sweeps.runner import validate
from sweeps.schema import SweepConfig
from sweeps.space import flatten, grid_points, trial_config
from sweeps.sweep_checks import validate_values

from .sweep_helpers import compose_config, prune_sweep, typed_config


def test_default_config_is_a_grid_of_six_valid_trials():
    cfg = compose_config()
    validate(cfg)
    points = grid_points(SweepConfig.from_dict(cfg).sweep)
    assert len(points) == 6
    assert {p["prune.learnables_reduction_goal"] for p in points} == {0.6, 0.97, 0.99}
    trial = trial_config(cfg, points[-1])
    assert trial["prune"]["learnables_reduction_increment"] == points[-1]["prune.learnables_reduction_increment"]
    assert trial["seed"] == 0
    assert flatten(trial)["finetune.solver"] == "sgdm"


@pytest.mark.parametrize(
    "override, key",
    [
        ("sweep=single prune.learnables_reduction_goal=1.5", "prune.learnables_reduction_goal"),
        ("prune.learnables_reduction_increment=0", "prune.learnables_reduction_increment"),
        ("prune.num_importance_score_iterations=-3", "prune.num_importance_score_iterations"),
        ("prune.num_importance_score_iterations=often", "prune.num_importance_score_iterations"),
        ("prune.criterion=magic", "prune.criterion"),
        ("prune.group_reduction=max", "prune.group_reduction"),
        ("finetune.initial_learn_rate=-0.1", "finetune.initial_learn_rate"),
        ("finetune.mini_batch_size=0", "finetune.mini_batch_size"),
        ("finetune.solver=lbfgs", "finetune.solver"),
        ("finetune.learn_rate_schedule=linear", "finetune.learn_rate_schedule"),
        ("finetune.learn_rate_floor=-0.001", "finetune.learn_rate_floor"),
        ("finetune.learn_rate_floor=0.5", "finetune.learn_rate_floor=0.5 is above finetune.initial_learn_rate"),
        ("finetune.warmup_fraction=1.0", "finetune.warmup_fraction"),
        ("finetune.final_fine_tuning_epochs=-1", "finetune.final_fine_tuning_epochs"),
        ("finetune.carry_optimizer_state=maybe", "finetune.carry_optimizer_state"),
        ("finetune.learn_rate_drop_factor=2", "finetune.learn_rate_drop_factor"),
        ("model.name=resnet21", "model.name"),
        ("model.width=0", "model.width"),
        ("model=resnet20 model.width=64", "model.width=64 is set for model 'resnet20', which has a fixed width"),
        ("ray.gpus_per_trial=-1", "ray.gpus_per_trial"),
        ("ray.max_concurrent_trials=0", "ray.max_concurrent_trials"),
        ("sweep.seeds=[]", "sweep.seeds"),
        ("sweep.grid.prune.learnables_reduction_increment=[0.1,7]", "prune.learnables_reduction_increment"),
        ("+sweep.grid.prune.nonexistent=[1,2]", "prune.nonexistent"),
        ("+sweep.grid.ray.max_failures=[1,2]", "ray.max_failures"),
        ("+sweep.grid.model.width=[16,32]", "sweep.grid.model.width is not allowed: a sweep trains one baseline"),
        ("+sweep.grid.finetune.baseline_epochs=[1,2]", "finetune.baseline_epochs cannot change between trials"),
        ("+sweep.grid.data.name=[digits,mnist1d]", "sweep.grid.data.name is not allowed"),
        ("+sweep.grid.data.split_seed=[0,1]", "of the data keys only max_train_samples, max_val_samples, augment can"),
        ("sweep=single prune.layers=middle_convs", "prune.layers"),
        ("sweep=single prune.layers=[features.0,features.99]", "prune.layers"),
        ("tracking.uri=file:///tmp/mlruns", "tracking.uri"),
    ],
)
def test_bad_values_name_the_key(override, key):
    cfg = compose_config(*override.split())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_layer_subsets_resolve_per_model():
    cfg = compose_config()

    def layer_names_for(cfg, prunable):
        return resolve(SweepConfig.from_dict(cfg), prunable)

    prunable = ["features.0", "features.3", "features.7"]
    assert layer_names_for(with_overrides(cfg, {"prune.layers": "all"}), prunable) is None
    assert layer_names_for(with_overrides(cfg, {"prune.layers": "late_convs"}), prunable) == [
        "features.3",
        "features.7",
    ]
    generic = with_overrides(cfg, {"prune.layers": "early_convs", "model.layer_subsets": {}})
    assert layer_names_for(generic, prunable) == ["features.0", "features.3"]
    with pytest.raises(ConfigError, match="valid conv names"):
        layer_names_for(with_overrides(cfg, {"prune.layers": ["features.1"]}), prunable)


def test_data_that_does_not_fit_the_model_is_rejected():
    with pytest.raises(ConfigError, match="model.name='mnist1d_cnn'.*shape|shape.*mnist1d_cnn"):
        validate(compose_config("model=mnist1d_cnn", "model.layer_subsets={}"))
    with pytest.raises(ConfigError, match="3-channel"):
        validate(compose_config("model=torchvision", "model.name=resnet18"))


def test_model_width_sets_the_channels_of_the_built_model():
    from prune_core.data import build_data
    from sweeps.build import make_model

    config = typed_config("model.width=16")
    model = make_model(config, build_data(config.data))
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32, 32]
    assert make_model(typed_config(), build_data(config.data)).features[0].out_channels == 32  # null: its own


def test_missing_data_folder_is_rejected():
    with pytest.raises(ConfigError, match="data.root"):
        validate(compose_config("data=cifar10", "data.root=/nonexistent/cifar", "model=resnet20"))


def test_cli_reports_bad_input_in_one_paragraph_without_traceback(tmp_path):
    result = prune_sweep(
        "sweep=single", "prune.learnables_reduction_goal=2", f"output_dir={tmp_path}", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert "prune.learnables_reduction_goal=2" in result.stderr and "(0, 1]" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # no sweep folder, database or Hydra log


def test_cli_unknown_config_group_option_is_a_config_error(tmp_path):
    result = prune_sweep("model=nope", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_validation_rejects_every_grid_point_before_running():
    cfg = compose_config("sweep.grid.prune.learnables_reduction_goal=[0.5,1.2]")
    with pytest.raises(ConfigError, match=r"sweep\.grid\.prune\.learnables_reduction_goal value 1\.2 \(grid axis\)"):
        validate(cfg)
    validate_values(compose_config())


def test_pareto_front_keeps_only_undominated_trials():
    import pandas as pd

    from sweeps.report import pareto_front

    table = pd.DataFrame(
        {
            "trial": list("abcdef"),
            "learnables": [100, 80, 60, 60, 120, 90],
            "val_accuracy": [90.0, 91.0, 85.0, 84.0, 95.0, 89.0],
        }
    )
    assert pareto_front(table)["trial"].tolist() == ["c", "b", "e"]


def test_model_checkpoint_is_loaded_instead_of_training_and_checked_before_running(tmp_path):
    import torch

    from prune_core.data import build_data
    from sweeps.baseline import prepare_baseline
    from sweeps.build import make_model

    config = typed_config("sweep=single")
    data = build_data(config.data)
    weights = make_model(config, data).state_dict()
    torch.save(weights, tmp_path / "mine.pt")
    cfg = compose_config("sweep=single", f"model.checkpoint={tmp_path / 'mine.pt'}")
    validate(cfg)
    baseline = prepare_baseline(SweepConfig.from_dict(cfg), data, tmp_path / "baselines", "cpu")
    loaded = torch.load(baseline.path, weights_only=True)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)  # loaded, not trained
    torch.save(make_model(typed_config("model=resnet20"), data).state_dict(), tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    for name in ("other.pt", "corrupt.pt", "missing.pt"):
        with pytest.raises(ConfigError, match=r"model\.checkpoint="):
            validate(compose_config("sweep=single", f"model.checkpoint={tmp_path / name}"))


def test_baseline_does_not_depend_on_the_global_random_state(tmp_path):
    import torch

    from prune_core.data import build_data
    from sweeps.baseline import prepare_baseline

    cfg = typed_config("sweep=single", "finetune.baseline_epochs=1", "data.max_train_samples=100")
    data = build_data(cfg.data)
    weights = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        baseline = prepare_baseline(cfg, data, tmp_path / f"run{seed}", "cpu")
        assert not baseline.cached
        weights.append(torch.load(baseline.path, weights_only=True))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert prepare_baseline(cfg, data, tmp_path / "run1", "cpu").cached


def test_baseline_key_covers_only_what_trains_the_baseline():
    from sweeps.baseline import baseline_key

    key = baseline_key(typed_config())
    assert baseline_key(typed_config("finetune.max_epochs=3", "finetune.initial_learn_rate=0.02")) == key
    assert baseline_key(typed_config("prune.criterion=l1")) == key
    overrides = ("finetune.baseline_epochs=2", "finetune.learn_rate_schedule=piecewise", "data.name=mnist1d")
    for override in (*overrides, "model.width=16"):
        assert baseline_key(typed_config(override)) != key, override
    assert baseline_key(typed_config("model.width=32")) == key  # digits_cnn's own width: the same network


REQUIRED = {"data=imagefolder": ["data.root=photos", "data.val_fraction=0.1"]}
"""Keys a config group option leaves for the user to set (``???``)."""


def _group_options() -> list[str]:
    from pathlib import Path

    from sweeps.cli import CONFIG_DIR

    groups = [folder for folder in sorted(Path(CONFIG_DIR).iterdir()) if folder.is_dir() and folder.name != "hydra"]
    optional = {"experiment"}  # not in the defaults list: selected with +experiment=...
    return [
        f"{'+' if group.name in optional else ''}{group.name}={option.stem}"
        for group in groups
        for option in sorted(group.glob("*.yaml"))
    ]


@pytest.mark.parametrize("option", _group_options())
def test_every_config_group_option_and_experiment_composes_and_validates(option):
    cfg = compose_config(option, *REQUIRED.get(option, []))
    validate_values(cfg)
    assert "???" not in str(cfg)  # nothing left unset
    assert SweepConfig.from_dict(cfg).to_dict() == {**cfg, "seed": 0}  # every key is in the schema


def test_the_debug_experiment_is_one_tiny_trial():
    cfg = compose_config("+experiment=debug")
    assert len(grid_points(SweepConfig.from_dict(cfg).sweep)) == 1 and cfg["data"]["max_train_samples"] == 160
    assert compose_config("+experiment=debug", "sweep=increments")["sweep"]["grid"]  # a group override still wins


def test_a_mistyped_key_in_a_users_config_file_is_named_not_ignored(tmp_path):
    cfg = compose_config()
    cfg["prune"]["learnables_reduction_gaol"] = 0.5  # what a group file of the user's own would bring
    with pytest.raises(ConfigError, match=r"prune\.learnables_reduction_gaol is not a config key; did you mean"):
        validate(cfg)
    (tmp_path / "prune").mkdir()
    mine = "defaults:\n  - default\n  - _self_\nlearnables_reduction_gaol: 0.5\n"  # the default prune keys, one added
    (tmp_path / "prune" / "mine.yaml").write_text(mine)
    result = prune_sweep("--config-dir", str(tmp_path), "prune=mine", f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 2 and "learnables_reduction_gaol" in result.stderr
    assert not (tmp_path / "out").exists()
