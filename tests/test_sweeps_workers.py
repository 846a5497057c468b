"""Trials over several Ray Train workers (``ray.workers_per_trial``): gloo data parallelism inside a Tune trial."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from sweeps.config import ConfigError
from sweeps.runner import run_sweep

from .sweep_helpers import TINY, compose_config, iteration_steps, trial_runs


def test_workers_the_cluster_cannot_place_fail_before_any_run(tmp_path, local_ray):
    cfg = compose_config(*TINY, f"output_dir={tmp_path}", "ray.workers_per_trial=3")  # 3 x 1 CPU on 2 CPUs
    with pytest.raises(
        ConfigError, match=r"ray\.workers_per_trial=3 x ray\.cpus_per_worker=3 CPUs but the Ray cluster"
    ):
        run_sweep(cfg)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "baselines").exists()


def test_a_two_worker_trial_takes_the_one_worker_steps_and_records_once(tmp_path, local_ray):
    """The same global mini-batch on two workers: the same number of optimizer steps, one MLflow run (rank 0's) with
    each iteration and mini-batch once, and an accuracy near the one-worker trial's (BatchNorm normalises each
    worker's half batch on its own statistics, so the two runs are close, not equal: tests/test_data_parallel.py
    shows the equality without BatchNorm)."""
    runs = {}
    for workers in (1, 2):
        folder = tmp_path / f"workers{workers}"
        outcome = run_sweep(compose_config(*TINY, f"output_dir={folder}", f"ray.workers_per_trial={workers}"))
        assert outcome.failed_trials == 0 and len(outcome.table) == 1
        [run] = trial_runs(outcome.tracking_uri)
        runs[workers] = (run, MlflowClient(outcome.tracking_uri))
    for run, client in runs.values():
        assert run.info.status == "FINISHED" and run.data.params["ray.workers_per_trial"] in {"1", "2"}
        assert [m.step for m in client.get_metric_history(run.info.run_id, "learnables")] == iteration_steps(run)
    batches = [m.step for m in runs[2][1].get_metric_history(runs[2][0].info.run_id, "train_loss")]
    assert batches == list(range(1, len(batches) + 1))  # every mini-batch once
    steps_per_epoch = {}
    for workers, (run, client) in runs.items():
        table = json.loads(
            Path(client.download_artifacts(run.info.run_id, "training_history.json", tmp_path)).read_text()
        )
        history = pd.DataFrame(table["data"], columns=table["columns"])
        steps_per_epoch[workers] = set(history.groupby(["pruning_iteration", "epoch"]).size())
    assert steps_per_epoch[1] == steps_per_epoch[2] and len(steps_per_epoch[1]) == 1  # one step per global batch
    accuracy = [runs[w][0].data.metrics["final_val_accuracy"] for w in (1, 2)]
    assert abs(accuracy[0] - accuracy[1]) <= 10.0, accuracy
