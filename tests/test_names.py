"""One name per setting: every prune / finetune key reaches the engine under its own name, and the
names of the previous release are still accepted, with a deprecation message naming the new key."""

import json
from dataclasses import fields

import pytest
import yaml

from prune_core import TrainingOptions
from prune_core.data import build_data
from prune_core.pruning_settings import PruningSettings
from sweeps.build import training_options
from sweeps.names import (
    ADDED_IN,
    RENAMED,
    current_name,
    engine_arguments,
    renamed_config,
    renamed_overrides,
    with_added_keys,
)
from sweeps.runner import run_sweep
from sweeps.schema import SweepConfig

from .sweep_helpers import TINY, compose_config, prune_sweep, trial_runs, typed_config

SWEEP_ONLY = {"prune": {"layers"}, "finetune": {"baseline_epochs", "baseline_learn_rate"}}
"""The keys with no engine counterpart (documented in the README and sweeps/names.py)."""


def test_every_prune_and_finetune_key_reaches_the_engine_under_its_own_name():
    cfg = compose_config()
    settings = {f.name for f in fields(PruningSettings)}
    options = training_options(typed_config().finetune, build_data(cfg["data"]), "cpu", seed=0)
    for group in ("prune", "finetune"):
        for key, value in cfg[group].items():
            if key in SWEEP_ONLY[group]:
                continue
            if key in settings:
                assert engine_arguments(cfg[group], PruningSettings)[key] == value
            elif key != "device":  # the trial resolves "auto" to the device Ray gave it
                assert getattr(options, key) == value, key
            assert key in settings or hasattr(TrainingOptions, key), f"{group}.{key} is not an engine name"


def test_the_baseline_trains_with_its_own_epochs_and_learn_rate_and_the_trials_keys_otherwise():
    finetune = typed_config("finetune.baseline_epochs=7", "finetune.baseline_learn_rate=0.2").finetune
    baseline, trials = finetune.training_fields(baseline=True), finetune.training_fields()
    assert (baseline["max_epochs"], baseline["initial_learn_rate"]) == (7, 0.2)
    assert (trials["max_epochs"], trials["initial_learn_rate"]) == (finetune.max_epochs, finetune.initial_learn_rate)
    assert "carry_optimizer_state" not in baseline and "device" not in trials


def test_old_names_on_the_command_line_are_renamed_with_a_message(capsys):
    lines = ["prune.reduction_goal=0.5", "+sweep.grid.finetune.learn_rate=[0.1]", "finetune.learn_rate_floor=0.0"]
    assert renamed_overrides(lines) == [
        "prune.learnables_reduction_goal=0.5",
        "+sweep.grid.finetune.initial_learn_rate=[0.1]",
        "finetune.learn_rate_floor=0.0",
    ]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "prune-sweep: prune.reduction_goal is deprecated; use prune.learnables_reduction_goal "
        "(the old name goes in the next release).",
        "prune-sweep: sweep.grid.finetune.learn_rate is deprecated; use sweep.grid.finetune.initial_learn_rate "
        "(the old name goes in the next release).",
    ]


def test_old_names_in_a_config_are_renamed_and_an_old_key_set_wins_over_the_new_default(capsys):
    cfg = compose_config()
    cfg["finetune"]["epochs"] = 3  # a user's config file of the previous release
    cfg["sweep"]["grid"] = {"prune": {"reduction_increment": [0.1, 0.2]}}
    renamed = renamed_config(cfg)
    assert renamed["finetune"]["max_epochs"] == 3 and "epochs" not in renamed["finetune"]
    assert renamed["sweep"]["grid"] == {"prune": {"learnables_reduction_increment": [0.1, 0.2]}}
    assert SweepConfig.from_dict(renamed).finetune.max_epochs == 3  # the typed config takes it
    assert capsys.readouterr().err.count("is deprecated") == 2
    assert current_name("prune.importance_iterations") == "prune.num_importance_score_iterations"
    assert set(RENAMED.values()) <= {f"{g}.{k}" for g in ("prune", "finetune") for k in compose_config()[g]}


def test_a_config_of_the_previous_release_gets_the_keys_added_since_with_their_defaults():
    """A resumed sweep's saved config, or a user's sweep file without ``defaults: [base, _self_]``."""
    cfg = compose_config("sweep=criteria")
    old = json.loads(json.dumps(cfg))
    for key in ("search", "objectives", "constraints", "space", "sampler", "num_samples", "scheduler"):
        del old["sweep"][key]
    del old["tracking"]["register_best"], old["tracking"]["system_metrics"]
    del old["ray"]["workers_per_trial"], old["ray"]["cpus_per_worker"], old["ray"]["gpus_per_worker"]
    del old["model"]["width"]
    assert {file.partition("/")[0] for file in ADDED_IN} == {"sweep", "tracking", "ray", "model"}
    assert with_added_keys(old) == cfg  # the file's own values (the criteria grid, 3 seeds) kept
    assert SweepConfig.from_dict(old).sweep.search == "grid"


def test_cli_accepts_an_old_name_and_prints_the_config_under_the_new_one(tmp_path):
    result = prune_sweep(
        "--cfg", "job", "sweep=single", "prune.reduction_goal=0.5", "finetune.batch_size=32", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["prune"]["learnables_reduction_goal"] == 0.5 and printed["finetune"]["mini_batch_size"] == 32
    assert "prune.reduction_goal is deprecated; use prune.learnables_reduction_goal" in result.stderr


@pytest.mark.parametrize("old_grid", [False, True], ids=["new-names", "saved-by-previous-release"])
def test_a_sweep_logs_new_names_and_resumes_a_config_saved_with_old_ones(tmp_path, old_grid, local_ray):
    outcome = run_sweep(
        compose_config(*TINY, "+sweep.grid.prune.learnables_reduction_increment=[0.3]", f"output_dir={tmp_path}")
    )
    (run,) = trial_runs(outcome.tracking_uri)
    assert run.data.params["prune.learnables_reduction_increment"] == "0.3"
    assert "prune.reduction_increment" not in run.data.params
    assert list(outcome.table.columns[:2]) == ["trial", "prune.learnables_reduction_increment"]
    if old_grid:  # the saved config of a sweep started by the previous release: resuming it still works
        saved = outcome.folder / "sweep_config.json"
        record = json.loads(saved.read_text())
        cfg = {**record["config"], "_sweep": record["context"]}  # that release kept the run state in the config
        cfg["sweep"]["grid"] = {"prune": {"reduction_increment": [0.3]}}
        cfg["prune"]["reduction_goal"] = cfg["prune"].pop("learnables_reduction_goal")
        saved.write_text(json.dumps(cfg))
        resumed = run_sweep(compose_config(f"output_dir={tmp_path}", f"resume={outcome.folder}"))
        assert resumed.failed_trials == 0 and list(resumed.table["prune.learnables_reduction_increment"]) == ["0.3"]
