"""End-to-end sweeps on a local Ray (ray.init(num_cpus=2)) and against a real MLflow server."""

import math

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from sweeps.config import ConfigError
from sweeps.runner import run_sweep

from .sweep_helpers import TINY, compose_config, free_port, iteration_steps

ARTIFACTS = {
    "pruning_history.json",
    "training_history.json",
    "validation_history.json",
    "network_metrics.json",
    "pruning_progress.png",
}


def _check_sweep_record(uri: str, outcome, n_trials: int) -> None:
    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(outcome.parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'",
    )
    assert len(children) == n_trials and outcome.failed_trials == 0
    assert len(outcome.table) == n_trials and 1 <= len(outcome.front) <= n_trials
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_finished"] == n_trials
    parent_files = {a.path for a in client.list_artifacts(outcome.parent_run_id)}
    assert {
        "config.json",
        "grid.json",
        "trials.json",
        "pareto_front.json",
        "accuracy_vs_learnables.png",
    } <= parent_files
    mlflow.set_tracking_uri(uri)
    assert isinstance(mlflow.pytorch.load_model(f"runs:/{outcome.parent_run_id}/baseline_model"), torch.nn.Module)
    for run in children:
        run_id, data = run.info.run_id, run.data
        assert run.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(run_id)} >= ARTIFACTS
        assert data.params["prune.learnables_reduction_goal"] == "0.4" and "finetune.solver" in data.params
        assert data.tags["stop_reason"] and data.tags["ray.node_id"] and data.tags["pruned_layers"]
        steps = [m.step for m in client.get_metric_history(run_id, "learnables")]
        assert steps == iteration_steps(run)  # no gaps or duplicates; the final fine-tuning's row comes last
        values = [m.value for m in client.get_metric_history(run_id, "learnables")]
        assert values == sorted(values, reverse=True) and values[-1] == data.metrics["final_learnables"]
        batches = [m.step for m in client.get_metric_history(run_id, "train_loss")]
        assert batches == sorted(set(batches)) and len(batches) >= steps[-1]
        assert data.metrics["final_reduction"] >= 0.4 - 1e-9
        assert 0 < data.metrics["compress_seconds"] < data.metrics["trial_seconds"]
        pruned = mlflow.pytorch.load_model(f"runs:/{run_id}/pruned_model")
        out = pruned(torch.rand(3, 1, 8, 8))
        (model,) = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
        )  # the pruned model carries the trial's final metrics, so a sweep's models rank by them
        finals = {m.key: m.value for m in model.metrics if m.key.startswith("final_")}
        assert finals == {k: v for k, v in data.metrics.items() if k.startswith("final_")}
        assert out.shape == (3, 10)
        assert sum(p.numel() for p in pruned.parameters()) == int(data.metrics["final_learnables"])


def test_local_sweep_writes_parent_and_child_runs(tmp_path, local_ray):
    cfg = compose_config(
        *TINY,
        f"output_dir={tmp_path}",
        "+sweep.grid.prune.layers=[all,late_convs]",  # late_convs: features.3 and features.7 (conf/model/digits_cnn)
        "+sweep.grid.data.max_train_samples=[160,96]",  # 160: the sweep's data set; 96: the trial builds its own
        "finetune.final_fine_tuning_epochs=1",  # one epoch (the default is 2): checked against the batch count below
    )
    outcome = run_sweep(cfg)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert outcome.tracking_uri == uri
    _check_sweep_record(uri, outcome, n_trials=4)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    subset = outcome.table[outcome.table["prune.layers"] == "late_convs"]
    assert len(subset) == 2
    for run_id in subset["run_id"]:  # the first conv and its BatchNorm, outside the subset, kept their channels
        changed = set(client.get_run(run_id).data.tags["pruned_layers"].split(","))
        assert {"features.3", "features.7"} & changed and not {"features.0", "features.1"} & changed, changed
    for run_id, samples in zip(outcome.table["run_id"], outcome.table["data.max_train_samples"], strict=True):
        table = mlflow.artifacts.load_dict(f"runs:/{run_id}/training_history.json")
        history = pd.DataFrame(table["data"], columns=table["columns"])
        first_epoch = history[(history["pruning_iteration"] == 1) & (history["epoch"] == history["epoch"].min())]
        assert len(first_epoch) == math.ceil(int(samples) / 32)  # batches of finetune.mini_batch_size=32
        assert (history["phase"] == "final").sum() == len(first_epoch)  # one epoch of final fine-tuning
    # the baseline was trained once and is reused (cached) by a second sweep with the same config
    assert len(list((tmp_path / "baselines").glob("*.pt"))) == 1
    assert (outcome.folder / "trials.csv").is_file() and (outcome.folder / "accuracy_vs_learnables.png").is_file()


def test_gpus_missing_from_the_cluster_fail_before_any_run(tmp_path, local_ray):
    cfg = compose_config(*TINY, f"output_dir={tmp_path}", "ray.gpus_per_trial=1")
    with pytest.raises(ConfigError, match=r"ray\.gpus_per_trial=1 GPUs but the Ray cluster has 0"):
        run_sweep(cfg)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "baselines").exists()


def test_sweep_against_a_real_mlflow_server(tmp_path, local_ray, mlflow_server):
    cfg = compose_config(
        *TINY,
        f"output_dir={tmp_path}",
        "tracking=server",
        f"tracking.uri={mlflow_server}",
        "+sweep.grid.prune.learnables_reduction_increment=[0.2,0.4]",
    )
    outcome = run_sweep(cfg)
    assert not (tmp_path / "mlflow.db").exists()
    _check_sweep_record(mlflow_server, outcome, n_trials=2)


def test_unreachable_tracking_server_fails_before_any_run(tmp_path):
    cfg = compose_config(*TINY, f"output_dir={tmp_path}", f"tracking.uri=http://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError, match="tracking.uri=.* is not reachable"):
        run_sweep(cfg)
