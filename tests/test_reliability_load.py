"""Load: 16 short trials, 4 at a time, logging to one ``mlflow server`` lose nothing."""

import csv
import json
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow import MlflowClient

from sweeps.runner import run_sweep

from .sweep_helpers import TINY, compose_config, free_port, start_mlflow_server, stop_mlflow_server

TABLES = {"pruning_history.json", "training_history.json", "validation_history.json", "network_metrics.json"}


@pytest.fixture
def four_slot_ray():
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def _reported(folder) -> dict[str, list[tuple[int, float]]]:
    """(pruning iteration, learnables) rows each trial reported to Ray Tune, by trial name."""
    reported = {}
    for progress in folder.glob("ray/tune/*/progress.csv"):
        trial = "_".join(progress.parent.name.split("_")[:4])  # run_trial_<experiment>_<index>
        with open(progress) as f:
            rows = [r for r in csv.DictReader(f) if r.get("learnables") and r.get("pruning_iteration")]
        reported[trial] = [(int(float(r["pruning_iteration"])), float(r["learnables"])) for r in rows]
    return reported


def test_sixteen_trials_four_at_a_time_against_one_server_lose_nothing(tmp_path, four_slot_ray):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        cfg = compose_config(
            *TINY,
            f"output_dir={tmp_path}",
            "tracking=server",
            f"tracking.uri={uri}",
            "+sweep.grid.prune.learnables_reduction_increment=[0.2,0.4]",
            "+sweep.grid.prune.criterion=[taylor,l1]",
            "sweep.seeds=[0,1,2,3]",
            "ray.max_concurrent_trials=4",
        )
        outcome = run_sweep(cfg)
        assert outcome.failed_trials == 0 and len(outcome.table) == 16

        client, reported = MlflowClient(uri), _reported(outcome.folder)
        runs = client.search_runs(
            [client.get_run(outcome.parent_run_id).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'",
        )
        assert len(runs) == 16 and {r.info.run_name for r in runs} == set(reported)
        mlflow.set_tracking_uri(uri)
        counted = {"metric_rows": 0, "tables": 0, "models": 0}
        for run in runs:
            run_id = run.info.run_id
            assert run.info.status == "FINISHED"
            learnables = client.get_metric_history(run_id, "learnables")
            # step 0 is the baseline; steps 1.. are what the trial reported to Tune, value for value
            assert [(m.step, m.value) for m in learnables[1:]] == reported[run.info.run_name]
            history = json.loads(Path(client.download_artifacts(run_id, "training_history.json", tmp_path)).read_text())
            batches = [row[history["columns"].index("iteration")] for row in history["data"]]
            losses = client.get_metric_history(run_id, "train_loss")
            assert sorted(m.step for m in losses) == sorted(batches) and len(batches) > 0
            for key in ("reduction", "val_loss", "val_accuracy"):
                assert len(client.get_metric_history(run_id, key)) == len(learnables)
            counted["metric_rows"] += 4 * len(learnables) + len(losses)
            artifacts = {a.path for a in client.list_artifacts(run_id)}
            assert artifacts >= TABLES
            counted["tables"] += len(TABLES & artifacts)
            model = mlflow.pytorch.load_model(f"runs:/{run_id}/pruned_model")
            assert sum(p.numel() for p in model.parameters()) == run.data.metrics["final_learnables"]
            counted["models"] += 1
    finally:
        stop_mlflow_server(server)
    log = (tmp_path / "server.log").read_text()
    assert "database is locked" not in log.lower() and "Traceback" not in log
    print(f"load: 16 runs, {counted}")
