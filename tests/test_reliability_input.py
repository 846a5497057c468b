"""Bad input costs seconds: random and hand-picked overrides end in a clean error or a working trial.

``FUZZ_CASES=2000 pytest tests/test_reliability_input.py -k fuzz`` runs a longer fuzz.
"""

import os
import random

import pytest
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from prune_core import compress_network
from prune_core.analysis import analyze_network
from sweeps.build import example_batch, make_model, training_options
from sweeps.config import ConfigError, layer_names_for
from sweeps.runner import validate
from sweeps.tracking import check_reachable, tracking_uri

from .sweep_helpers import TINY, compose_config, free_port, prune_sweep

DEAD_SERVER = f"http://127.0.0.1:{free_port()}"
FUZZ_POOL: dict[str, list] = {
    "prune.learnables_reduction_goal": [0.3, 0.5, 1.0, 0, -0.2, 1.5, "abc", "null"],
    "prune.learnables_reduction_increment": [0.1, 0.25, 1, 0, 2, "x", "[0.1]"],
    "prune.num_importance_score_iterations": ["auto", 5, 1, 0, -1, "often", 2.5],
    "prune.criterion": ["taylor", "l1", "random", "magic", 3],
    "prune.group_reduction": ["sum", "mean", "max"],
    "prune.layers": ["all", "late_convs", "early_convs", "middle", "[features.0]", "[features.0,nope]", "[]"],
    "prune.validation_threshold": ["null", 0.5, -1, "high"],
    "finetune.initial_learn_rate": [0.01, 0.1, -1, 0, "fast"],
    "finetune.learn_rate_schedule": ["none", "piecewise", "cosine", "linear"],
    "finetune.learn_rate_floor": [0.0, 0.001, -0.1, 5.0],
    "finetune.warmup_fraction": [0.0, 0.2, 1.0, -0.5],
    "finetune.final_fine_tuning_epochs": [0, 1, -1, 1.5],
    "finetune.learn_rate_drop_period": [1, 0],
    "finetune.mini_batch_size": [16, 64, 0, -5, 2.5],
    "finetune.solver": ["sgdm", "adam", "rmsprop", "lbfgs"],
    "finetune.max_epochs": [1, 2, 0, "many"],
    "finetune.momentum": [0.9, -0.1],
    "finetune.device": ["auto", "cpu", 7],
    "model.name": ["digits_cnn", "mnist1d_cnn", "resnet21", "resnet20"],
    "data.name": ["digits", "mnist1d", "imagenet"],
    "data.max_train_samples": [160, 0, -1, "all"],
    "ray.gpus_per_trial": [0, -1, 1.5, "one"],
    "ray.max_concurrent_trials": [1, 4, 0],
    "ray.max_failures": [0, 3, -2],
    "tracking.uri": ["null", "file:///tmp/mlruns", DEAD_SERVER, "sqlite:///:memory:"],
    "tracking.retry_seconds": [30, 0, -1],
    "sweep.seeds": ["[0]", "[0,1]", "[]", "[a]"],
    "sweep.mode": ["max", "min", "sideways"],
    "+sweep.grid.prune.learnables_reduction_increment": ["[0.2,0.4]", "[0.1,7]", "[]"],
    "+sweep.grid.prune.nonexistent": ["[1,2]"],
    "+sweep.grid.finetune.initial_learn_rate": ["[0.01,0.02]", "[0.01,-1]"],
    "model": ["digits_cnn", "resnet20", "no_such_model"],
    "sweep": ["single", "increments", "nope"],
}


def _random_overrides(rng: random.Random) -> list[str]:
    keys = rng.sample(sorted(FUZZ_POOL), rng.randint(1, 3))
    return [f"{key}={rng.choice(FUZZ_POOL[key])}" for key in keys]


def _check_config(overrides: list[str], tmp_path) -> dict | None:
    """What ``prune-sweep`` checks before Ray starts. Returns the config when it is valid, None when
    Hydra refused the override (a clean Hydra error); a ConfigError propagates."""
    try:
        cfg = compose_config(*TINY, f"output_dir={tmp_path}", *overrides)
    except (HydraException, OmegaConfBaseException):
        return None
    validate(cfg)
    check_reachable(tracking_uri(cfg["tracking"]["uri"], tmp_path), timeout=2)
    return cfg


def _run_like_a_trial(cfg: dict) -> None:
    """The engine call a trial of ``cfg`` makes (first grid point, no Ray or MLflow), one pruning step."""
    from prune_core.data import build_data
    from sweeps.schema import SweepConfig
    from sweeps.space import grid_points, trial_config

    config = SweepConfig.from_dict(trial_config(cfg, grid_points(SweepConfig.from_dict(cfg).sweep)[0]))
    data = build_data(config.data)
    model = make_model(config, data)
    layers = layer_names_for(config, analyze_network(model, example_batch(data)).prunable_layer_names)
    compress_network(
        model,
        data.train,
        "crossentropy",
        training_options(config.finetune, data, "cpu", seed=0),
        learnables_reduction_goal=config.prune.learnables_reduction_goal,
        learnables_reduction_increment=max(config.prune.learnables_reduction_increment, 0.3),
        num_importance_score_iterations=config.prune.num_importance_score_iterations,
        layer_names=layers,
        criterion=config.prune.criterion,
        group_reduction=config.prune.group_reduction,
        final_fine_tuning_epochs=min(config.finetune.final_fine_tuning_epochs, 1),
        verbosity_level="off",
    )


def test_fuzzed_overrides_fail_cleanly_or_run(tmp_path):
    rng = random.Random(2026)
    cases = int(os.environ.get("FUZZ_CASES", "120"))
    outcomes = {"config_error": 0, "hydra_error": 0, "valid": 0}
    valid = []
    for _ in range(cases):
        overrides = _random_overrides(rng)
        try:
            cfg = _check_config(overrides, tmp_path)
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message.strip() and len(message) < 1200, overrides
            named = [o.split("=")[0].lstrip("+").removeprefix("sweep.grid.") for o in overrides]
            assert any(key.split(".")[-1] in message for key in named) or "model" in message, (overrides, message)
            outcomes["config_error"] += 1
            continue
        if cfg is None:
            outcomes["hydra_error"] += 1
            continue
        outcomes["valid"] += 1
        valid.append(cfg)
    print(f"fuzz: {cases} override sets -> {outcomes}")
    assert outcomes["config_error"] > cases // 4 and outcomes["valid"] > 5  # the pool exercises both sides
    torch.manual_seed(0)
    for cfg in valid[:6]:
        _run_like_a_trial(cfg)
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob("*/"))  # nothing was created


@pytest.mark.parametrize(
    "override, message",
    [
        (f"ray.address=127.0.0.1:{free_port()}", "ray.address='127.0.0.1:.*' could not be reached"),
        ("ray.address=nohostport", "ray.address='nohostport' is not allowed"),
    ],
)
def test_unreachable_or_malformed_ray_address_fails_fast(override, message):
    from sweeps.cluster import check_address

    cfg = compose_config(override)
    with pytest.raises(ConfigError, match=message):
        check_address(cfg["ray"]["address"], timeout=2)


def test_unwritable_output_folder_is_a_config_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="output_dir=.* cannot be created: .*a-file is a file"):
        validate(compose_config(*TINY, f"output_dir={blocker}/out"))
    with pytest.raises(ConfigError, match="ray.storage_path=.* cannot be created"):
        validate(compose_config(*TINY, f"output_dir={tmp_path}", f"ray.storage_path={blocker}/ray"))


def test_cli_bad_ray_address_exits_2_within_seconds_without_traceback(tmp_path):
    result = prune_sweep(f"ray.address=127.0.0.1:{free_port()}", f"output_dir={tmp_path}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ray.address=" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # no folder, database or log file
