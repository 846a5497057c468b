"""Beyond grids (issue 20): the multi-objective front, budgets, hypervolume, the Optuna searcher's view of budgets,
ASHA's stopped trials in MLflow, and a search sweep end to end on a local Ray."""

import math
import os

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from sweeps import tracking
from sweeps.report import hypervolume, pareto_front, sort_trials, violations
from sweeps.runner import run_sweep
from sweeps.schema import SweepContext
from sweeps.search import STOPPED_EARLY, align_trial_count, early_stop_recorder, search_algorithm
from sweeps.space import param_space

from .sweep_helpers import TINY, compose_config, typed_config


def _trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial": ["t0", "t1", "t2", "t3", "t4"],
            "learnables": [500, 250, 250, 400, 100],
            "macs": [9e6, 9e6, 4e6, 2e6, 1e6],
            "val_accuracy": [90.0, 80.0, 80.0, 85.0, 95.0],
            "feasible": [True, True, True, True, False],
        }
    )


def test_front_of_two_and_three_objectives_leaves_out_infeasible_trials():
    table = _trials()
    # t4 dominates everything but breaks a budget; t1 and t2 tie on accuracy and learnables: the one sort_trials
    # puts first is kept, t2 with fewer MACs (not t1, the first row)
    assert list(pareto_front(table)["trial"]) == ["t2", "t3", "t0"]
    assert sort_trials(table[table["trial"].isin(["t1", "t2"])], "val_accuracy", "max")["trial"].tolist() == [
        "t2",
        "t1",
    ]
    three = pareto_front(table, {"val_accuracy": "max", "learnables": "min", "macs": "min"})
    assert set(three["trial"]) == {"t0", "t2", "t3"}  # t2 has t1's accuracy and learnables in fewer MACs
    assert list(pareto_front(table.assign(feasible=True))["trial"]) == ["t4"]


def test_violations_are_positive_only_for_broken_budgets():
    final = {"final_learnables": 300, "final_macs": 2e6, "final_val_accuracy": 91.0}
    amounts = violations(final, {"max_learnables": 250, "max_macs": 3e6, "min_val_accuracy": 90.0})
    assert amounts == {"max_learnables": 50, "max_macs": -1e6, "min_val_accuracy": -1.0}


def test_hypervolume_is_the_dominated_share_of_the_unit_box():
    front = pd.DataFrame({"val_accuracy": [90.0, 80.0], "learnables": [500, 250]})
    # losses (0.1, 0.5) and (0.2, 0.25) against (1, 1): 0.9 * 0.5 + 0.8 * 0.75 - 0.8 * 0.5
    volume = hypervolume(front, {"val_accuracy": "max", "learnables": "min"}, {"learnables": 1000})
    assert volume == pytest.approx(0.65)
    bigger = pd.concat([front, pd.DataFrame({"val_accuracy": [95.0], "learnables": [900]})])
    assert hypervolume(bigger, {"val_accuracy": "max", "learnables": "min"}, {"learnables": 1000}) > volume
    larger_than_unpruned = pd.DataFrame({"val_accuracy": [99.0], "learnables": [1500]})  # outside the box
    assert hypervolume(larger_than_unpruned, {"val_accuracy": "max", "learnables": "min"}, {"learnables": 1000}) == 0


def test_searcher_marks_trials_over_budget_infeasible_for_optuna():
    sweep = typed_config("sweep=search", "+sweep.constraints.max_learnables=1000").sweep
    searcher = search_algorithm(sweep)
    searcher.set_search_properties(None, None, param_space(sweep))
    configs = {trial_id: searcher.suggest(trial_id) for trial_id in ("a", "b", "c")}
    assert all(0.5 <= config["prune.learnables_reduction_goal"] <= 0.99 for config in configs.values())
    searcher.on_trial_complete("a", {"final_val_accuracy": 90.0, "final_learnables": 800})
    searcher.on_trial_complete("b", {"final_val_accuracy": 95.0, "final_learnables": 1200})
    searcher.on_trial_complete("c", {"pruning_iteration": 2, "val_accuracy": 50.0})  # stopped early: no final values
    trials = searcher._ot_study.get_trials(deepcopy=False)
    # shares of the budget, so budgets in different units add up; no final values: twice over every budget
    assert [t.constraints for t in trials] == [{"max_learnables": -0.2}, {"max_learnables": 0.2}, {"max_learnables": 1}]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[0].values == [90.0, 800]


def test_a_restored_search_counts_exactly_the_trials_tune_restores(tmp_path):
    """Tune saves the trial list, then the search's count of suggested trials: a driver killed in between leaves a
    count behind the list, and the resumed search would run one trial more than num_samples (seen as a fifth trial
    of a search of four). The count is set to the restored trials before Tune restores them, both ways."""
    from ray.tune.search import SearchGenerator

    sweep = typed_config("sweep=search").sweep

    def saved_count() -> int:
        restored = SearchGenerator(search_algorithm(sweep))
        restored.restore_from_dir(str(tmp_path))
        return restored.get_state()["counter"]

    generator = SearchGenerator(search_algorithm(sweep))
    generator.set_state({**generator.get_state(), "counter": 1, "total_samples": sweep.num_samples})
    generator.save_to_dir(str(tmp_path), "2026-12-01_00-00-00")
    assert saved_count() == 1
    assert align_trial_count(tmp_path, 2) and saved_count() == 2  # behind the list
    assert not align_trial_count(tmp_path, 2) and saved_count() == 2
    assert align_trial_count(tmp_path, 1) and saved_count() == 1  # ahead: a suggestion the list lost is made again
    assert not align_trial_count(tmp_path / "no search", 3)


def test_a_restored_sampler_ignores_the_completion_of_a_trial_it_never_suggested():
    sweep = typed_config("sweep=search").sweep
    searcher = search_algorithm(sweep)
    searcher.set_search_properties(None, None, param_space(sweep))
    searcher.suggest("known")
    searcher.on_trial_complete("unknown", {"final_val_accuracy": 90.0, "final_learnables": 800})
    searcher.on_trial_complete("known", {"final_val_accuracy": 91.0, "final_learnables": 700})
    assert [t.values for t in searcher._ot_study.get_trials(deepcopy=False)] == [[91.0, 700]]


def test_a_trial_stopped_by_the_scheduler_keeps_its_run_tagged(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.experiment_id(uri, "stops", tmp_path / "artifacts")
    client = MlflowClient(uri)
    tags = {tracking.SWEEP_TAG: "s1", tracking.TRIAL_TAG: "t1"}
    run_id = client.create_run(experiment, tags=tags).info.run_id
    finished_id = client.create_run(experiment, tags={**tags, tracking.TRIAL_TAG: "t2"}).info.run_id
    context = SweepContext("s1", str(tmp_path), uri, experiment, "parent", "", {"accuracy": 0.0}, 1)
    recorder = early_stop_recorder(context)

    class Trial:
        def __init__(self, trial_id: str, last_result: dict) -> None:
            self.trial_id, self.last_result = trial_id, last_result

    recorder.on_trial_complete(0, [], Trial("t1", {"pruning_iteration": 2, "val_accuracy": 60.0}))
    recorder.on_trial_complete(0, [], Trial("t2", {"final_learnables": 100}))
    stopped, finished = client.get_run(run_id), client.get_run(finished_id)
    assert stopped.data.tags["stop_reason"] == STOPPED_EARLY and stopped.info.status == "KILLED"
    assert "stop_reason" not in finished.data.tags and finished.info.status == "RUNNING"


@pytest.fixture(scope="module", autouse=True)
def system_metrics_every_second():
    """MLflow samples system metrics every 10 s; these trials take about that long. Set before the module's Ray
    starts, so its workers inherit it."""
    name = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
    before = os.environ.get(name)
    os.environ[name] = "1"
    yield
    if before is None:
        del os.environ[name]
    else:
        os.environ[name] = before


def test_search_sweep_with_budget_asha_registry_and_system_metrics(tmp_path, local_ray):
    budget = 20_000
    cfg = compose_config(
        *TINY,
        "sweep=search",
        "sweep.num_samples=4",
        "sweep.scheduler=asha",
        "sweep.grace_period=1",
        "+sweep.grid.prune.learnables_reduction_goal=[0.6]",  # this point is evaluated first
        "+sweep.grid.prune.learnables_reduction_increment=[0.2]",
        f"+sweep.constraints.max_learnables={budget}",
        "tracking.register_best=digits_pruned",
        "tracking.system_metrics=true",
        f"output_dir={tmp_path}",
    )
    outcome = run_sweep(cfg)
    uri, client = outcome.tracking_uri, MlflowClient(outcome.tracking_uri)
    runs = client.search_runs(
        [outcome.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
    )
    finished = [r for r in runs if "final_learnables" in r.data.metrics]
    stopped = [r for r in runs if r.data.tags.get("stop_reason") == STOPPED_EARLY]
    assert len(runs) == 4 and len(finished) + len(stopped) == 4 and outcome.failed_trials == 0
    assert outcome.stopped_trials == len(stopped) and all(r.info.status == "KILLED" for r in stopped)
    assert len(outcome.table) == len(finished) and not set(outcome.table["run_id"]) & {r.info.run_id for r in stopped}
    values = {
        (r.data.params["prune.learnables_reduction_goal"], r.data.params["prune.learnables_reduction_increment"])
        for r in runs
    }
    assert ("0.6", "0.2") in values  # the grid's point was evaluated
    goals = {float(r.data.params["prune.learnables_reduction_goal"]) for r in runs}
    assert len(goals) > 1 and all(0.5 <= goal <= 0.99 for goal in goals)
    for run in finished:
        feasible = run.data.metrics["final_learnables"] <= budget
        assert run.data.tags["feasible"] == str(feasible).lower()
    front = outcome.front
    assert front["feasible"].all() and set(front["run_id"]) <= set(outcome.table["run_id"])
    parent = client.get_run(outcome.parent_run_id).data.metrics
    assert parent["trials_stopped"] == len(stopped) and parent["hypervolume"] == pytest.approx(outcome.hypervolume)
    assert (0 < outcome.hypervolume <= 1) if len(front) else outcome.hypervolume == 0
    assert any(key.startswith("system/") for run in finished for key in run.data.metrics)
    feasible_table = outcome.table[outcome.table["feasible"]]
    if len(feasible_table):  # the best feasible model is registered, aliased "best"
        version = client.get_model_version_by_alias("digits_pruned", "best")
        assert version.run_id == feasible_table["run_id"].iloc[0]
        mlflow.set_tracking_uri(uri)
        model = mlflow.pytorch.load_model("models:/digits_pruned@best")
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
        learnables = sum(p.numel() for p in model.parameters())
        assert learnables == feasible_table["learnables"].iloc[0] <= budget
    else:
        assert outcome.best_model_uri is None and not client.search_registered_models()
    assert math.isfinite(outcome.hypervolume)


def test_a_run_lost_by_a_killed_driver_is_adopted_by_the_trial_created_again(tmp_path):
    """Tune snapshots its experiment state every 10 s or more: a driver killed after a trial started but before the
    next snapshot loses that trial, and the resumed search suggests the same values again under a new trial id."""
    from sweeps.trial import _adopt_orphan, trial_checkpoint

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.experiment_id(uri, "resumed", tmp_path / "artifacts")
    client = MlflowClient(uri)
    values = tracking.values_key({"prune.learnables_reduction_goal": 0.7, "seed": 0})
    base = {tracking.SWEEP_TAG: "s1", tracking.VALUES_TAG: values}
    known = client.create_run(experiment, tags={**base, tracking.TRIAL_TAG: "known"}).info.run_id
    lost = client.create_run(experiment, tags={**base, tracking.TRIAL_TAG: "lost"}).info.run_id
    client.set_terminated(client.create_run(experiment, tags={**base, tracking.TRIAL_TAG: "done"}).info.run_id)
    context = SweepContext("s1", str(tmp_path), uri, experiment, "parent", "", {"accuracy": 0.0}, 1)
    trial_checkpoint(context, "lost").parent.mkdir()
    trial_checkpoint(context, "lost").write_bytes(b"iteration 3")

    assert tracking.mark_orphans(uri, experiment, "s1", known_trials={"known", "done"}) == 1
    assert (
        _adopt_orphan(context, "new", tracking.values_key({"seed": 0, "prune.learnables_reduction_goal": 0.9})) is None
    )
    assert _adopt_orphan(context, "new", values) == lost
    adopted = client.get_run(lost).data.tags
    assert adopted[tracking.TRIAL_TAG] == "new" and tracking.ORPHAN_TAG not in adopted
    assert (
        trial_checkpoint(context, "new").read_bytes() == b"iteration 3"
        and not trial_checkpoint(context, "lost").exists()
    )
    assert _adopt_orphan(context, "another", values) is None  # adopted once
    assert tracking.ORPHAN_TAG not in client.get_run(known).data.tags
