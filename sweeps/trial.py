"""One sweep trial: a compress_network run inside a Ray worker, reported to Tune and recorded in MLflow.

A restarted trial (worker killed, driver resumed) continues from its last per-iteration pruning
checkpoint, in the same MLflow run, and logs only the steps that run does not have yet. That checkpoint
is one file per trial in the sweep folder, replaced atomically after each iteration, not a Tune
checkpoint: Tune deletes its older checkpoints before its experiment state names the newer one, so a
driver killed in between left a state that no resume could restore.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from prune_core import IterationResult, compare_networks, compress_network
from prune_core.analysis import analyze_network
from prune_core.checkpoints import copy_atomically
from prune_core.data import DataBundle, build_data
from sweeps import tracking
from sweeps.build import example_batch, make_model, training_options
from sweeps.config import ConfigError, flatten, layer_names_for, selects_all_layers
from sweeps.console import quiet_libraries
from sweeps.report import ITERATION_METRICS, violations
from sweeps.schema import FinetuneSection, RaySection, SweepConfig, SweepContext
from sweeps.space import trial_config

STEP_METRICS = {name: name for name in ITERATION_METRICS}
"""Pruning-history columns logged as MLflow step metrics (step = pruning iteration)."""
TRIAL_CHECKPOINTS = "trial_checkpoints"
"""Folder of the sweep folder holding each unfinished trial's latest pruning checkpoint."""


def trial_device(finetune: FinetuneSection, ray_section: RaySection) -> str:
    """The device for this trial from what Ray assigned: its GPU, else CPU (or an error, per config)."""
    import ray

    wanted = finetune.device
    if wanted != "auto":
        return wanted
    if not ray.get_gpu_ids():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if ray_section.allow_cpu_fallback:
        return "cpu"
    raise ConfigError(
        f"Ray assigned GPU {ray.get_gpu_ids()} to this trial but CUDA is not available in its worker; set "
        "ray.allow_cpu_fallback=true to run on CPU, or ray.gpus_per_trial=0."
    )


@dataclass(frozen=True)
class TrialPlace:
    """Who runs this part of a trial: the Tune trial's id and name, the worker's rank (0 writes the MLflow
    records and the trial checkpoint) and its device."""

    trial_id: str
    trial_name: str
    rank: int = 0
    device: str = "cpu"


def run_trial(params: dict[str, Any], base: dict, context: SweepContext, data: DataBundle) -> None:
    """Ray Tune function trainable: ``params`` are the trial's grid values, ``base`` the sweep's plain config.

    ``data`` is the sweep's data set (built from ``base["data"]``), used unless the grid changes ``data`` keys.
    With ``ray.workers_per_trial`` > 1 the trial is data-parallel training on Ray Train workers.
    """
    from ray import tune

    config = SweepConfig.from_dict(trial_config(base, params))
    place = TrialPlace(tune.get_context().get_trial_id(), tune.get_context().get_trial_name())
    if config.ray.workers_per_trial > 1:
        from sweeps.workers import run_on_workers

        run_on_workers(params, base, context, data, place)
    else:
        place = replace(place, device=trial_device(config.finetune, config.ray))
        prune_trial(params, base, context, data, place, tune.report)


def prune_trial(
    params: dict[str, Any],
    base: dict,
    context: SweepContext,
    data: DataBundle,
    place: TrialPlace,
    report_metrics: Callable[[dict], None],
) -> None:
    """The trial's compress_network run, its records (rank 0) and its metrics given to ``report_metrics`` after every
    pruning iteration and at the end (on every rank: Ray Train's report is collective)."""
    import mlflow

    trial_start = time.perf_counter()
    config = SweepConfig.from_dict(trial_config(base, params))
    uri, writer = context.tracking_uri, place.rank == 0
    mlflow.set_tracking_uri(uri)
    tracking.configure_retries(config.tracking.retry_seconds)
    quiet_libraries(config.verbose)
    workers = config.ray.workers_per_trial > 1
    torch.set_num_threads(max(1, int(config.ray.cpus_per_worker if workers else config.ray.cpus_per_trial)))
    if config.data != base["data"]:
        data = build_data(config.data)
    model = make_model(config, data)
    model.load_state_dict(torch.load(context.baseline_path, map_location="cpu", weights_only=True))
    layer_names = None  # all: compress_network's own trace finds them, so the model is not traced twice
    if not selects_all_layers(config):
        layer_names = layer_names_for(config, analyze_network(model, example_batch(data)).prunable_layer_names)
    run_id = _trial_run(config, context, place, params) if writer else None
    workdir = Path(tempfile.mkdtemp(prefix=f"prune-trial-{place.trial_id}-"))
    (workdir / "pruning").mkdir()
    latest = trial_checkpoint(context, place.trial_id)
    report = IterationReporter(uri, run_id, latest, report_metrics)
    try:
        with tracking.system_metrics(uri, run_id, config.tracking.system_metrics and writer):
            compress_start = time.perf_counter()
            pruned, info = compress_network(
                model,
                data.train,
                "crossentropy",
                training_options(config.finetune, data, place.device, seed=config.seed),
                **config.prune.engine_arguments(),
                **config.finetune.engine_arguments(),
                layer_names=layer_names,
                pruning_checkpoint_path=workdir / "pruning",
                verbosity_level="off",
                plots="pruning-progress",
                callbacks=[report],
                resume_from=latest if latest.is_file() else None,
            )
            compress_seconds = time.perf_counter() - compress_start - report.seconds
            final = {}
            if writer:
                networks, example = (model, pruned), example_batch(data)
                final = _record_result(config, context, run_id, networks, info, example, workdir / "pruning")
        # compress_seconds: pruning and fine-tuning only (the per-iteration Tune/MLflow reporting excluded)
        timing = {"compress_seconds": compress_seconds, "trial_seconds": time.perf_counter() - trial_start}
        if writer:
            tracking.log_metrics(uri, run_id, timing)
            tracking.with_retries(mlflow.MlflowClient(uri).set_terminated, run_id)
        last = info.pruning_history.iloc[-1]  # its metrics again (a scheduler's metric must be in every result),
        report_metrics({**{name: last[col] for col, name in STEP_METRICS.items()}, **final, **timing})  # no iteration
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class IterationReporter:
    """The compress_network callback of a trial: each pruning iteration's metrics to Tune, then (rank 0) its rows to
    MLflow, only the steps the run lacks, and its checkpoint to the trial checkpoint.

    Tune first: with several workers the report is collective, so a worker lost before it leaves the iteration
    neither in MLflow nor in the checkpoint, and the restarted trial redoes it; Tune receives it once.
    """

    def __init__(self, uri: str, run_id: str | None, latest: Path, report_metrics: Callable[[dict], None]) -> None:
        self.uri, self.run_id, self.latest, self.report_metrics = uri, run_id, latest, report_metrics
        self.logged = (
            {key: tracking.last_step(uri, run_id, key) for key in ("learnables", "train_loss")} if run_id else {}
        )
        self.seconds = 0.0
        """Time spent reporting (excluded from the trial's compress_seconds)."""

    def __call__(self, result: IterationResult) -> None:
        start, row = time.perf_counter(), result.row
        self.report_metrics(_iteration_metrics(row))
        if self.run_id is not None:
            tracking.log_steps(self.uri, self.run_id, [row], "iteration", STEP_METRICS, self.logged["learnables"])
            training = {"loss": "train_loss"}
            tracking.log_steps(
                self.uri, self.run_id, result.training_rows, "iteration", training, self.logged["train_loss"]
            )
        if result.checkpoint is not None:
            self.latest.parent.mkdir(parents=True, exist_ok=True)
            copy_atomically(result.checkpoint, self.latest)
        self.seconds += time.perf_counter() - start


def _iteration_metrics(row: dict) -> dict[str, float]:
    return {"pruning_iteration": row["iteration"], **{name: row[col] for col, name in STEP_METRICS.items()}}


def trial_checkpoint(context: SweepContext, trial_id: str) -> Path:
    """Where the trial ``trial_id`` of this sweep keeps its latest pruning checkpoint."""
    return Path(context.folder) / TRIAL_CHECKPOINTS / f"{trial_id}.pt"


def _trial_run(config: SweepConfig, context: SweepContext, place: TrialPlace, params: dict[str, Any]) -> str:
    """This trial's MLflow child run: found by its tags when the trial restarts, or the orphaned run of a trial
    with the same values that a killed driver lost (a resumed search suggests it again), else created."""
    import ray
    from mlflow import MlflowClient

    uri, experiment = context.tracking_uri, context.experiment_id
    tags = {tracking.SWEEP_TAG: context.sweep_id, tracking.TRIAL_TAG: place.trial_id}
    values = tracking.values_key(params)
    existing = tracking.find_run(uri, experiment, tags) or _adopt_orphan(context, place.trial_id, values)
    if existing is not None:
        return existing
    client = MlflowClient(uri)
    node = {
        "ray.node_id": ray.get_runtime_context().get_node_id(),
        "ray.node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
    }
    run = tracking.with_retries(
        client.create_run,
        experiment,
        run_name=place.trial_name,
        tags={**tags, **node, tracking.VALUES_TAG: values, "mlflow.parentRunId": context.parent_run_id}
        | {"prune_sweep.role": "trial"},
    )
    run_id = run.info.run_id
    tracking.log_params(uri, run_id, flatten(config.to_dict()))
    baseline = {"iteration": 0, "learnables": context.baseline_learnables, "reduction": 0.0}
    baseline |= {f"val_{k}": v for k, v in context.baseline_metrics.items()}
    tracking.log_steps(uri, run_id, [baseline], "iteration", STEP_METRICS, after=-1)
    return run_id


def _adopt_orphan(context: SweepContext, trial_id: str, values: str) -> str | None:
    """The orphaned run (see :func:`sweeps.tracking.mark_orphans`) of this sweep with these trial values, now
    this trial's, with its pruning checkpoint; None when there is none."""
    from mlflow import MlflowClient

    orphan_tags = {tracking.SWEEP_TAG: context.sweep_id, tracking.ORPHAN_TAG: "true", tracking.VALUES_TAG: values}
    run_id = tracking.find_run(context.tracking_uri, context.experiment_id, orphan_tags)
    if run_id is None:
        return None
    client = MlflowClient(context.tracking_uri)
    lost_trial = tracking.with_retries(client.get_run, run_id).data.tags[tracking.TRIAL_TAG]
    tracking.with_retries(client.set_tag, run_id, tracking.TRIAL_TAG, trial_id)
    tracking.with_retries(client.delete_tag, run_id, tracking.ORPHAN_TAG)
    checkpoint = trial_checkpoint(context, lost_trial)
    if checkpoint.is_file():
        checkpoint.replace(trial_checkpoint(context, trial_id))
    return run_id


def _record_result(
    config: SweepConfig, context: SweepContext, run_id: str, networks, info, example: torch.Tensor, pruning_folder: Path
) -> dict[str, Any]:
    """Tables, tags, plots, the comparison table and the pruned model; returns the final metrics.

    The progress plot is the PNG compress_network saved in ``pruning_folder`` (not drawn again).
    """
    import mlflow
    from mlflow import MlflowClient

    (original, pruned), uri = networks, context.tracking_uri
    client = MlflowClient(uri)
    history = info.pruning_history.copy()
    history["filters_removed"] = history["filters_removed"].map(str)
    tracking.log_table(uri, run_id, history, "pruning_history.json")
    tracking.log_table(uri, run_id, info.training_history, "training_history.json")
    tracking.log_table(uri, run_id, info.validation_history, "validation_history.json")
    val_accuracy = _final_accuracy(info)
    comparison = compare_networks(
        original.cpu(), pruned.cpu(), example, accuracy=(context.baseline_metrics["accuracy"], val_accuracy)
    )
    tracking.log_table(uri, run_id, comparison.reset_index(names="network"), "network_metrics.json")
    tracking.with_retries(client.log_artifact, run_id, str(pruning_folder / "pruning_progress.png"))
    final = {
        "final_learnables": info.learnables,
        "final_reduction": info.reduction,
        "final_val_accuracy": val_accuracy,
        "final_macs": comparison.loc["pruned", "macs"],
        "final_latency_ms": comparison.loc["pruned", "latency_ms"],
        "pruning_iterations": info.pruning_iterations,
    }
    broken = [key for key, amount in violations(final, config.sweep.constraints).items() if amount > 0]
    tags = {"stop_reason": info.stop_reason, "pruned_layers": ",".join(info.pruned_layers)}
    tags |= {"feasible": str(not broken).lower(), "broken_budgets": ",".join(broken)}
    for key, value in tags.items():
        tracking.with_retries(client.set_tag, run_id, key, value)
    model_id = None  # the final metrics go to the pruned model too: search_logged_models ranks a sweep's models
    if config.tracking.log_models:
        with tracking.with_retries(mlflow.start_run, run_id=run_id):
            model_id = tracking.log_model(pruned, example, "pruned_model")
    unpruned = {"unpruned_macs": comparison.loc["original", "macs"]}
    unpruned["unpruned_latency_ms"] = comparison.loc["original", "latency_ms"]
    tracking.log_metrics(uri, run_id, {**final, **unpruned}, model_id)
    return {**final, "feasible": not broken, "stop_reason": info.stop_reason, "mlflow_run_id": run_id}


def _final_accuracy(info) -> float:
    """Validation accuracy of the returned network: the last iteration with its learnables.

    (After a validation-threshold stop the returned network is the one before the last row.)
    """
    history = info.pruning_history
    return float(history.loc[history["learnables"] == info.learnables, "val_accuracy"].iloc[-1])
