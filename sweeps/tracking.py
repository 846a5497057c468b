"""MLflow: the tracking URI, experiments, idempotent step logging with retries, tables and figures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from sweeps.config import ConfigError

T = TypeVar("T")
SWEEP_TAG, TRIAL_TAG = "prune_sweep.sweep_id", "prune_sweep.trial_id"
VALUES_TAG = "prune_sweep.values"
"""A hash of a trial's swept values and seed: what a lost trial and its re-suggestion share."""
ORPHAN_TAG = "prune_sweep.orphan"
"""Set on a trial run that a killed driver lost (Tune's restored state has no such trial)."""
EXPERIMENT_KIND = "mlflow.experimentKind"
TRANSIENT_ERROR_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED"}
_retry = {"seconds": 120.0}


class TrackingUnavailable(RuntimeError):
    """The tracking store kept failing with transient errors for the whole retry budget."""


def configure_retries(seconds: float) -> None:
    """Bound every tracking call, its retries included, to about ``seconds`` (``tracking.retry_seconds``).

    MLflow's own HTTP retries (several minutes by default) are turned off so that
    :func:`with_retries` is the one retry layer; each HTTP request times out after at most 30 s.
    Both stay overridable through MLflow's environment variables.
    """
    _retry["seconds"] = float(seconds)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, min(30, int(seconds)))))


def is_transient(err: BaseException) -> bool:
    """Whether retrying can help: the store is unreachable, busy or locked, not a refused request."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code in TRANSIENT_ERROR_CODES or err.get_http_status_code() >= 500
    if isinstance(err, FileNotFoundError):  # asked for something the store does not hold
        return False
    return isinstance(err, OSError) or "database is locked" in str(err) or type(err).__name__ == "OperationalError"


def tracking_uri(uri: str | None, output_dir: Path) -> str:
    """``tracking.uri``, or a sqlite database under ``output_dir`` when it is null; the file store is refused."""
    if uri is None:
        return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"
    if not isinstance(uri, str) or not uri.startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql")):
        raise ConfigError(
            f"tracking.uri={uri!r} is not allowed; use null (a local sqlite database), sqlite:///<absolute path>, "
            "a database URI (postgresql://...) or a tracking server (http://host:port). The ./mlruns file store "
            "is deprecated and refused by MLflow 3."
        )
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A tracking server must answer its /health endpoint within ``timeout`` seconds."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(
            f"tracking.uri={uri!r} is not reachable ({getattr(err, 'reason', err)}); start the server, e.g. "
            "`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`, or use "
            "tracking=local."
        ) from None


def with_retries(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``; retry transient failures with exponential back-off (0.5 s doubling, at most
    10 s apart) for the budget set by :func:`configure_retries`, then raise TrackingUnavailable.
    Other errors are raised at once."""
    budget = _retry["seconds"]
    deadline, delay = time.monotonic() + budget, 0.5
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the tracking stores raise many types (HTTP, SQL, OS)
            remaining = deadline - time.monotonic()
            if not is_transient(err):
                raise
            if remaining <= 0:
                raise TrackingUnavailable(
                    f"the MLflow tracking store kept failing for {budget:g} s (tracking.retry_seconds) in "
                    f"{getattr(fn, '__name__', fn)}: {str(err).splitlines()[0][:200]}"
                ) from err
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, 10.0)


def experiment_id(uri: str, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, created on first use (artifacts under ``artifact_root`` for local stores).

    It is tagged as model development, so MLflow's UI opens it on its runs, not on the GenAI overview.
    """
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if artifact_root is not None and not uri.startswith(("http://", "https://")):
        location = (artifact_root / name).resolve().as_uri()
    kind = {EXPERIMENT_KIND: "custom_model_development"}
    return client.create_experiment(name, artifact_location=location, tags=kind)


def find_run(uri: str, experiment: str, tags: dict[str, str]) -> str | None:
    """The id of the run carrying all ``tags`` (a restarted trial reuses its run), or None."""
    from mlflow import MlflowClient

    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = with_retries(MlflowClient(uri).search_runs, [experiment], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def close_run(uri: str, run_id: str, reason: str) -> None:
    """End a trial run that will not finish: status KILLED, the tag ``stop_reason`` saying why."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    with_retries(client.set_tag, run_id, "stop_reason", reason)
    with_retries(client.set_terminated, run_id, "KILLED")


def values_key(params: dict[str, Any]) -> str:
    """A short stable hash of a trial's values (its grid point or sampled values, and its seed)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def mark_orphans(uri: str, experiment: str, sweep_id: str, known_trials: set[str]) -> int:
    """Tag the unfinished trial runs of a resumed sweep that Tune's restored state does not know (a driver killed
    between a trial's start and Tune's next experiment snapshot): the trial that Tune creates again with the same
    values adopts the run. Returns how many were tagged."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    query = f"tags.`{SWEEP_TAG}` = '{sweep_id}' and attributes.status = 'RUNNING'"
    runs = with_retries(client.search_runs, [experiment], filter_string=query, max_results=10_000)
    lost = [run for run in runs if run.data.tags.get(TRIAL_TAG) not in known_trials | {None}]
    for run in lost:
        with_retries(client.set_tag, run.info.run_id, ORPHAN_TAG, "true")
    return len(lost)


def finished_unknown(uri: str, experiment: str, sweep_id: str, known_trials: set[str]) -> int:
    """How many trial runs of this sweep finished although Tune's restored state does not know their trial: a trial
    that started and finished between two of Tune's experiment snapshots, before the driver was killed."""
    from mlflow import MlflowClient

    query = f"tags.`{SWEEP_TAG}` = '{sweep_id}' and attributes.status = 'FINISHED'"
    runs = with_retries(MlflowClient(uri).search_runs, [experiment], filter_string=query, max_results=10_000)
    return sum(run.data.tags.get(TRIAL_TAG) not in known_trials | {None} for run in runs)


def last_step(uri: str, run_id: str, key: str) -> int:
    """The highest step already logged for metric ``key`` (-1 when none): logging is idempotent."""
    from mlflow import MlflowClient

    history = with_retries(MlflowClient(uri).get_metric_history, run_id, key)
    return max((m.step for m in history), default=-1)


def log_steps(
    uri: str,
    run_id: str,
    rows: list[dict],
    step_key: str,
    names: dict[str, str],
    after: int,
    model_id: str | None = None,
) -> None:
    """Log ``rows[i][column]`` as metric ``names[column]`` at step ``rows[i][step_key]`` for steps > ``after``
    (also as metrics of the logged model ``model_id``, when given)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(row[column]), now, int(row[step_key]), model_id=model_id)
        for row in rows
        if int(row[step_key]) > after
        for column, name in names.items()
        if row.get(column) is not None
    ]
    client = MlflowClient(uri)
    for start in range(0, len(metrics), 900):  # stores cap one batch at 1000 metrics
        with_retries(client.log_batch, run_id, metrics=metrics[start : start + 900])


def log_metrics(uri: str, run_id: str, values: dict[str, float], model_id: str | None = None) -> None:
    """Single-valued metrics (step 0), e.g. a trial's final figures, also of the logged model ``model_id``."""
    log_steps(uri, run_id, [{"step": 0, **values}], "step", {name: name for name in values}, -1, model_id)


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Parameters as strings (cut to the store's 6000-character limit), in batches with retries."""
    from mlflow import MlflowClient
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    client = MlflowClient(uri)
    for start in range(0, len(items), 90):  # stores cap one batch at 100 params
        with_retries(client.log_batch, run_id, params=items[start : start + 90])


def log_model(model: Any, example: Any, name: str) -> str:
    """``mlflow.pytorch.log_model`` into the active run, with signature and input example, and
    prune_core's own file as an extra file, so that ``prune_core.load_pruned("runs:/<id>/<name>")``
    returns a network that can be trained further (MLflow's loader gives torch.export's
    inference-only module). Returns the id of the LoggedModel it created.

    The requirements are given (torch only) so MLflow skips its slow requirement inference.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from prune_core.io import MLFLOW_FILE, save_pruned

    model.eval()
    with torch.no_grad():
        signature = infer_signature(example.numpy(), model(example).numpy())
    with tempfile.TemporaryDirectory() as folder:
        own_file = save_pruned(model, Path(folder) / MLFLOW_FILE, example)
        info = with_retries(
            mlflow.pytorch.log_model,
            model,
            name=name,
            signature=signature,
            input_example=example.numpy(),
            extra_files=[str(own_file)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    return info.model_id


def download_pruned(uri: str, model_uri: str, path: Path) -> Path:
    """Copy the prune_core file of the MLflow model ``model_uri`` (tracked at ``uri``) to ``path``."""
    from prune_core.io import pruned_file

    shutil.copyfile(with_retries(pruned_file, model_uri, uri), path)
    return path


def log_table(uri: str, run_id: str, table: pd.DataFrame, artifact_file: str) -> None:
    """A DataFrame as an MLflow table artifact (JSON, shown in the UI's artifact and evaluation views)."""
    from mlflow import MlflowClient

    frame = table.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(str)
    with_retries(MlflowClient(uri).log_table, run_id, frame, artifact_file)


@contextmanager
def system_metrics(uri: str, run_id: str, enabled: bool) -> Iterator[None]:
    """While inside, MLflow samples CPU, memory (and GPU, with nvidia-ml-py) into the run's ``system/*`` metrics,
    continuing the steps of a restarted trial; the run's status is left alone (a stopped trial's included)."""
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, tracking_uri=uri, resume_logging=True)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
