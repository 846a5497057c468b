"""Faults cost at most one pruning iteration: a killed trial, a diverging trial, a full or read-only
checkpoint folder, and the MLflow server going away mid-trial."""

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from prune_core import TrainingOptions, compress_network
from prune_core.data import load_digits_tensors
from prune_core.models import DigitsCNN
from sweeps.trial import TRIAL_CHECKPOINTS

from .sweep_helpers import (
    SLOW_TRIAL,
    TINY,
    free_port,
    iteration_steps,
    prune_sweep,
    start_mlflow_server,
    start_sweep,
    stop_mlflow_server,
    trial_runs,
    wait_for,
)


def _assert_one_continuous_run(uri: str) -> dict:
    """One FINISHED trial run whose per-iteration and per-batch metrics have no gaps or duplicates."""
    runs = trial_runs(uri)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run, client = runs[0], MlflowClient(uri)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "Learnables reduction goal reached."
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "learnables")]
    assert steps == iteration_steps(run)
    batches = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert batches == list(range(1, len(batches) + 1))  # every mini-batch once
    return {"iterations": steps[-1], "batches": len(batches)}


def _reported_iterations(sweep_folder: Path) -> list[int]:
    """The pruning iterations the trial reported to Ray Tune, in order, over all its restarts."""
    (progress,) = sweep_folder.glob("ray/tune/*/progress.csv")
    with open(progress) as f:
        return [int(float(row["pruning_iteration"])) for row in csv.DictReader(f) if row["pruning_iteration"]]


def _trial_checkpoints(tmp_path: Path) -> list[Path]:
    return list(tmp_path.glob(f"digits_default/*/{TRIAL_CHECKPOINTS}/*.pt"))


def _checkpointed_iterations(tmp_path: Path) -> int:
    """Pruning iterations the running trial has logged to MLflow and checkpointed since: it logs an iteration
    right after Tune received it, then copies its checkpoint. (Tune's progress.csv is written in bursts,
    seconds late: a trial seen at its second iteration there may already be done.)"""
    uri, checkpoints = f"sqlite:///{tmp_path}/mlflow.db", _trial_checkpoints(tmp_path)
    if not checkpoints:
        return 0
    try:
        saved_ms = checkpoints[0].stat().st_mtime * 1000
        runs = trial_runs(uri)
        history = MlflowClient(uri).get_metric_history(runs[0].info.run_id, "learnables") if runs else []
    except Exception:  # noqa: BLE001 - a poll that met a write in progress (or a checkpoint being replaced): poll again
        return 0
    return sum(1 for metric in history if metric.step > 0 and metric.timestamp <= saved_ms)


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_trial_resumes_from_its_last_checkpoint_in_the_same_run(tmp_path, workers):
    """SIGKILL of the trial's process (one worker), or of one of its two Ray Train workers. MLflow gets every
    iteration once either way; Tune gets each once from one worker, and from two at most once: Ray Train hands a
    report to Tune only after collecting every worker's, so the iteration a worker finished just before it died
    can be missing there (the restarted trial resumes after it)."""
    args = [*SLOW_TRIAL, "ray.max_failures=2", f"ray.workers_per_trial={workers}"]
    driver = start_sweep(*args, f"output_dir={tmp_path}", cwd=tmp_path)
    wait_for(lambda: _checkpointed_iterations(tmp_path) >= 2, driver, "second checkpointed pruning iteration")
    process = "ray::ImplicitFunc" if workers == 1 else "ray::RayTrainWorker"
    found = subprocess.run(["pgrep", "-f", process], capture_output=True, text=True).stdout.split()
    assert len(found) == workers, found
    killed_after = _checkpointed_iterations(tmp_path)
    os.kill(int(found[-1]), signal.SIGKILL)
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert not _trial_checkpoints(tmp_path)  # removed once every trial had finished

    record = _assert_one_continuous_run(f"sqlite:///{tmp_path}/mlflow.db")
    (folder,) = tmp_path.glob("digits_default/*/")
    assert list(folder.glob("ray/tune/*/error.txt")), "the trial was not killed and restarted"
    # reported once per iteration, across the restart: it resumed from its last checkpoint
    reported, every = _reported_iterations(folder), list(range(1, record["iterations"] + 1))
    if workers == 1:
        assert reported == every
    else:
        assert reported == sorted(set(reported)) and len(set(every) - set(reported)) <= 1, reported
    print(f"sigkill: worker killed after iteration {killed_after}'s checkpoint; run {record}")


def test_mlflow_server_going_away_fails_the_trial_in_bounded_time_and_resume_finishes_it(tmp_path):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    args = [*SLOW_TRIAL, "tracking=server", f"tracking.uri={uri}", "tracking.retry_seconds=5", "ray.max_failures=1"]
    driver = start_sweep(*args, f"output_dir={tmp_path}", cwd=tmp_path)
    try:
        client = MlflowClient(uri)

        def iterations_logged() -> int:
            try:
                runs = trial_runs(uri)
                return len(client.get_metric_history(runs[0].info.run_id, "learnables")) if runs else 0
            except MlflowException:  # this poll's request dropped by a loaded server: poll again
                return 0

        wait_for(lambda: iterations_logged() >= 3, driver, "two logged pruning iterations")
    finally:
        stop_mlflow_server(server)
    went_away = time.monotonic()
    returncode = driver.wait(timeout=300)
    bounded = time.monotonic() - went_away
    log = (tmp_path / "driver.log").read_text()
    assert returncode == 3, log[-3000:]
    assert "kept failing for 5 s (tracking.retry_seconds)" in log and "prune-sweep resume=" in log
    assert bounded < 120  # 2 attempts of the trial and the summary, each giving up after 5 s of retries
    assert len(_trial_checkpoints(tmp_path)) == 1  # the trial's pruning checkpoint survived

    server = start_mlflow_server(tmp_path, port)
    try:
        result = prune_sweep(f"output_dir={tmp_path}", "resume=digits_default", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        _assert_one_continuous_run(uri)
    finally:
        stop_mlflow_server(server)
    print(f"mlflow server away: the driver gave up {bounded:.1f} s after the server stopped")


def test_diverging_trial_stops_cleanly_while_the_others_finish(tmp_path):
    grid = "+sweep.grid.finetune.initial_learn_rate=[0.01,1e12]"
    result = prune_sweep(*TINY, grid, f"output_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = {r.data.params["finetune.initial_learn_rate"]: r for r in trial_runs(uri)}
    assert set(runs) == {"0.01", "1000000000000.0"}
    diverged, normal = runs["1000000000000.0"], runs["0.01"]
    assert diverged.info.status == normal.info.status == "FINISHED"
    assert diverged.data.tags["stop_reason"] == "Training diverged."
    assert normal.data.tags["stop_reason"] == "Learnables reduction goal reached."
    import mlflow

    mlflow.set_tracking_uri(uri)
    last_good = mlflow.pytorch.load_model(f"runs:/{diverged.info.run_id}/pruned_model")
    assert sum(p.numel() for p in last_good.parameters()) == diverged.data.metrics["final_learnables"]
    assert torch.isfinite(last_good(torch.rand(2, 1, 8, 8))).all()


@pytest.fixture
def small_tmpfs(tmp_path):
    """Mount a tmpfs of the given size (and options) under tmp_path; skipped where mounting is not allowed."""
    mounted = []

    def mount(size_kib: int, options: str = "rw") -> Path:
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,{options}", "tmpfs", str(target)]
        if subprocess.run(command, capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], capture_output=True)


def _digits_pruning(folder: Path, **kwargs):
    x, y, _, _ = load_digits_tensors()
    torch.manual_seed(0)
    options = TrainingOptions(mini_batch_size=64, max_epochs=1, device="cpu")
    return compress_network(
        DigitsCNN(),
        (x, y),
        "crossentropy",
        options,
        learnables_reduction_goal=0.5,
        learnables_reduction_increment=0.1,
        pruning_checkpoint_path=folder,
        verbosity_level="off",
        **kwargs,
    )


def test_full_disk_fails_with_a_clear_error_and_keeps_the_last_checkpoint(small_tmpfs, tmp_path):
    disk = small_tmpfs(640)  # room for one iteration's checkpoint and its latest.pt copy (260 KB each), not two
    full = r"could not write the pruning checkpoint .*pruning_iteration_002\.pt \(No space left"
    with pytest.raises(OSError, match=full):
        _digits_pruning(disk)
    assert sorted(p.name for p in disk.iterdir()) == ["latest.pt", "pruning_iteration_001.pt"]
    writable = tmp_path / "elsewhere"
    writable.mkdir()
    _, info = _digits_pruning(writable, resume_from=disk / "latest.pt")  # nothing but iteration 2 is lost
    assert info.stop_reason == "Learnables reduction goal reached."
    assert list(info.pruning_history["iteration"]) == list(range(len(info.pruning_history)))


def test_read_only_checkpoint_folder_is_refused_before_any_work(small_tmpfs):
    folder = small_tmpfs(64, "ro")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"pruning_checkpoint_path=.* is not writable \(Read-only file system\)"):
        _digits_pruning(folder)
    assert time.monotonic() - start < 5
