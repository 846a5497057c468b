"""Compose sweep configs with Hydra's compose API, and tiny sweep settings for fast tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sweeps.cli import CONFIG_DIR
from sweeps.cluster import free_port  # noqa: F401 - the tests import it from here
from sweeps.schema import SweepConfig

TINY = ["+experiment=debug"]
"""The tiny preset (conf/experiment/debug.yaml): one trial on 160 digits, seconds."""


def iteration_steps(run) -> list[int]:
    """The MLflow steps of a finished trial run's per-iteration metrics: the baseline (0), every
    pruning iteration, and the final fine-tuning's row when ``finetune.final_fine_tuning_epochs`` > 0."""
    final = int(run.data.params["finetune.final_fine_tuning_epochs"]) > 0
    return list(range(int(run.data.metrics["pruning_iterations"]) + 1 + final))


def compose_config(*overrides: str) -> dict:
    """The resolved config ``prune-sweep`` would run with these overrides."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def typed_config(*overrides: str) -> SweepConfig:
    """The typed config of :func:`compose_config` (what the sweep's modules receive)."""
    return SweepConfig.from_dict(compose_config(*overrides))


def prune_sweep(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``prune-sweep`` console script of this environment."""
    script = Path(sys.executable).with_name("prune-sweep")
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_mlflow_server(folder: Path, port: int, workers: int = 2) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` with its sqlite store, artifacts and log (server.log) in
    ``folder``; returns once /health answers. Starting it again on the same folder keeps the runs."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{folder}/server.db"]
    command += ["--artifacts-destination", str(folder / "server-artifacts"), "--workers", str(workers)]
    with open(folder / "server.log", "a") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"mlflow server did not start; see {folder / 'server.log'}") from None
            time.sleep(0.5)


def stop_mlflow_server(server: subprocess.Popen) -> None:
    """Kill the server and its workers (its whole process group)."""
    if server.poll() is None:
        os.killpg(server.pid, 9)
    server.wait(timeout=30)


def trial_runs(uri: str, experiment: str = "digits_default") -> list:
    """The trial runs (not the parent runs) of ``experiment`` in the tracking store at ``uri``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], filter_string="tags.`prune_sweep.role` = 'trial'")


SLOW_TRIAL = [  # one trial of about six pruning iterations, about two seconds each
    *TINY,
    "data.max_train_samples=1000",
    "finetune.max_epochs=8",
    "prune.learnables_reduction_goal=0.6",
    "prune.learnables_reduction_increment=0.1",
]


def start_sweep(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    log = open(cwd / "driver.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("prune-sweep")), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(condition, driver: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert driver.poll() is None, f"the driver exited before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)
