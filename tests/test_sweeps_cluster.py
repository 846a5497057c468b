"""Sweeps on Ray clusters: logical GPUs bound concurrency; a two-node cluster started with `ray start`;
resuming a sweep whose driver was killed."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import ray
from mlflow import MlflowClient

from sweeps.runner import run_sweep
from sweeps.search import SEARCH_STATE_FILES
from sweeps.summary import LOST

from .sweep_helpers import (
    SLOW_TRIAL,
    TINY,
    compose_config,
    free_port,
    iteration_steps,
    prune_sweep,
    start_sweep,
    trial_runs,
    wait_for,
)

RAY = str(Path(sys.executable).with_name("ray"))
TWO_TRIALS = "+sweep.grid.prune.learnables_reduction_increment=[0.2,0.4]"


def test_logical_gpus_bound_concurrency_and_cpu_fallback_only_when_configured(tmp_path):
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)  # a logical GPU on a CPU machine
    try:
        common = [*TINY, TWO_TRIALS, "ray.gpus_per_trial=1", "ray.max_concurrent_trials=2"]
        outcome = run_sweep(compose_config(*common, f"output_dir={tmp_path / 'a'}", "ray.allow_cpu_fallback=true"))
        assert outcome.failed_trials == 0 and len(outcome.table) == 2
        runs = sorted(trial_runs(outcome.tracking_uri), key=lambda r: r.info.start_time)
        assert runs[0].info.end_time <= runs[1].info.start_time  # one GPU: one trial at a time
        refused = run_sweep(compose_config(*common, f"output_dir={tmp_path / 'b'}", "ray.allow_cpu_fallback=false"))
        assert refused.failed_trials == 2 and refused.table.empty
        errors = [p.read_text() for p in refused.folder.glob("ray/tune/*/error.txt")]
        assert errors and all("ray.allow_cpu_fallback=true" in text for text in errors)
    finally:
        ray.shutdown()


NO_AUTH = {"RAY_AUTH_MODE": "disabled"}
"""`ray start --head` turns Ray's token authentication on when ~/.ray/auth_token exists (Ray 2.60), and a second
`ray start --address` on the same machine then fails to authenticate: these local test clusters, and the drivers
that join them, go without (a driver whose environment says `token` sees its trial actors cancelled)."""
NO_TOKEN = {**os.environ, **NO_AUTH}


@dataclass(frozen=True)
class TwoNodes:
    address: str
    second_raylet: int
    """The process id of the second node's raylet."""


def _raylets() -> set[int]:
    """The raylet processes (one per Ray node) on this machine."""
    return {p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].endswith("/raylet")}


@pytest.fixture
def two_node_cluster(tmp_path):
    """A head and a second node, one CPU each, on 127.0.0.1 (started with `ray start`, stopped after)."""
    port = free_port()
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    subprocess.run(head, check=True, capture_output=True, timeout=120, env=NO_TOKEN)
    try:
        before = _raylets()
        worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"]
        joined = subprocess.run(worker, capture_output=True, text=True, timeout=120, env=NO_TOKEN)
        assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-2000:]
        (second,) = _raylets() - before
        yield TwoNodes(f"127.0.0.1:{port}", second)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def test_sweep_joins_a_running_two_node_cluster(tmp_path, two_node_cluster):
    address = two_node_cluster.address
    result = prune_sweep(
        *TINY, TWO_TRIALS, f"output_dir={tmp_path}", f"ray.address={address}", cwd=tmp_path, env=NO_AUTH
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = trial_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" and "final_learnables" in r.data.metrics for r in runs)
    nodes = {r.data.tags["ray.node_id"] for r in runs}
    assert len(nodes) == 2  # one CPU per node, two concurrent trials: one trial on each node


SEARCH_OF_FOUR = ["sweep=search", "sweep.num_samples=4", "sweep.space.prune.learnables_reduction_goal.high=0.6"]
"""A search of 4 trials, none stopped early (no scheduler), each at most 60% fewer learnables: seconds each."""


@pytest.mark.parametrize(
    "sweep",
    [
        ["+sweep.grid.prune.learnables_reduction_increment=[0.1,0.2,0.3,0.4]"],
        SEARCH_OF_FOUR,
    ],
    ids=["grid", "search"],
)
def test_resume_after_the_driver_was_killed_finishes_only_missing_trials(tmp_path, sweep):
    """A sweep resumes with its searcher's state: 4 finished trials in all, not 4 more, and no trial with two runs.

    A grid creates its lost trial again with the same values, which adopts the lost run. A search whose driver died
    after its sampler suggested a trial but before Tune's next snapshot saved that trial suggests other values on
    resume: the lost trial's run is then closed as KILLED with the stop reason that says so, and a new trial runs.
    A trial that started and finished between two of Tune's snapshots keeps its finished run and counts towards
    num_samples (the resumed search ran a fifth trial before). A count left one behind the trial list by a kill
    between Tune's two writes must not add a trial either: the search case makes that state every time."""
    args = [*TINY, *sweep, "ray.max_concurrent_trials=1", f"output_dir={tmp_path}", "ray.num_cpus=1"]
    driver = subprocess.Popen(
        [str(Path(sys.executable).with_name("prune-sweep")), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    deadline = time.monotonic() + 300
    while not any(r.info.status == "FINISHED" for r in trial_runs(uri) if (tmp_path / "mlflow.db").exists()):
        assert time.monotonic() < deadline and driver.poll() is None, "no trial finished before the deadline"
        time.sleep(1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything in its session
    driver.wait()
    finished_before = {r.data.tags["prune_sweep.trial_id"] for r in trial_runs(uri) if r.info.status == "FINISHED"}
    assert 1 <= len(finished_before) < 4
    if "sweep=search" in sweep:
        _count_one_suggestion_less(tmp_path)

    result = prune_sweep(f"output_dir={tmp_path}", "resume=digits_default", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = trial_runs(uri)
    trial_ids = [r.data.tags["prune_sweep.trial_id"] for r in runs]
    assert len(set(trial_ids)) == len(runs)  # no trial with two runs
    finished = [r for r in runs if r.info.status == "FINISHED"]
    lost = [r for r in runs if r.info.status != "FINISHED"]
    assert len(finished) == 4 and len(lost) <= (1 if "sweep=search" in sweep else 0), [r.info.status for r in runs]
    assert all(r.info.status == "KILLED" and r.data.tags["stop_reason"] == LOST for r in lost)
    client = MlflowClient(uri)
    for run in finished:
        assert run.info.status == "FINISHED" and "final_learnables" in run.data.metrics
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "learnables")]
        assert steps == list(range(len(steps)))
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def _count_one_suggestion_less(folder: Path) -> None:
    """The search state of a driver killed between Tune's two saves: the count of suggested trials one behind."""
    import ray.cloudpickle as cloudpickle

    newest = max(folder.rglob(SEARCH_STATE_FILES), key=lambda path: path.name)
    state = cloudpickle.loads(newest.read_bytes())
    newest.write_bytes(cloudpickle.dumps({**state, "counter": state["counter"] - 1}))


def test_a_stale_cluster_address_left_by_ray_start_does_not_stop_a_local_sweep(tmp_path):
    """`ray start --head` writes its address to <ray tmp>/ray/ray_current_cluster; a cluster that is gone
    (killed, not stopped) leaves it behind, and ray.address=null must still start Ray here."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        result = prune_sweep(*TINY, f"output_dir={tmp_path}", cwd=tmp_path, env={"RAY_TMPDIR": str(ray_tmp)})
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_worker_node_lost_mid_trial_costs_one_iteration_not_a_run(tmp_path, two_node_cluster):
    """Two trials on a two-node cluster, one CPU each; the second node (raylet and workers) is SIGKILLed after both
    trials logged two pruning iterations. The trial it ran restarts on the head node from its last checkpoint in
    the shared sweep folder: two runs, continuous steps, every mini-batch once."""
    args = [*SLOW_TRIAL, "sweep.seeds=[0,1]", "ray.max_failures=2"]  # two trials
    driver = start_sweep(
        *args, f"ray.address={two_node_cluster.address}", f"output_dir={tmp_path}", cwd=tmp_path, env=NO_AUTH
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def both_at_iteration_two() -> bool:
        runs = trial_runs(uri) if (tmp_path / "mlflow.db").exists() else []
        client = MlflowClient(uri)
        steps = [len(client.get_metric_history(r.info.run_id, "learnables")) for r in runs]
        return len(runs) == 2 and min(steps) >= 3  # step 0 (unpruned) and two pruning iterations

    wait_for(both_at_iteration_two, driver, "two iterations in both trials")
    node = psutil.Process(two_node_cluster.second_raylet)
    killed_at = time.monotonic()
    for process in [node, *node.children(recursive=True)]:
        process.kill()
    assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    print(f"node lost: the sweep finished {time.monotonic() - killed_at:.1f} s after the kill")
    runs, client = trial_runs(uri), MlflowClient(uri)
    assert len(runs) == 2 and len({r.data.tags["prune_sweep.trial_id"] for r in runs}) == 2
    restarted = {p.parent.name.split("_")[-2] for p in tmp_path.glob("digits_default/*/ray/tune/*/error.txt")}
    assert len(restarted) == 1, restarted  # the trial of the lost node failed once and was restarted
    for run in runs:
        assert run.info.status == "FINISHED" and "final_learnables" in run.data.metrics
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "learnables")]
        assert steps == iteration_steps(run)  # no iteration lost or logged twice
        batches = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert batches == list(range(1, len(batches) + 1))  # every mini-batch once
