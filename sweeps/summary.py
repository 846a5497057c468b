"""A finished sweep's summary: the trial table, the Pareto front and its hypervolume from the trials' MLflow runs,
logged to the parent run; the best feasible model copied out and, on request, registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps import tracking
from sweeps.config import flatten
from sweeps.names import current_name
from sweeps.report import RESULT_COLUMNS, accuracy_vs_learnables_figure, hypervolume, pareto_front, sort_trials
from sweeps.schema import SweepConfig, SweepContext, SweepSection
from sweeps.search import STOPPED_EARLY
from sweeps.space import SEED_KEY, space_entries

BEST_MODEL_FILE = "best_pruned.pt2"
LOST = "lost when the driver was killed; the resumed search did not suggest its values again"
BEST_ALIAS = "best"
"""The alias ``tracking.register_best`` gives the registered version."""


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep produced."""

    folder: Path
    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    sweep: SweepSection
    table: pd.DataFrame
    """Finished trials, best ``sweep.metric`` first."""
    front: pd.DataFrame
    """The feasible trials no other feasible trial dominates in ``sweep.objectives``."""
    hypervolume: float
    """The share of the objective box the front dominates (:func:`sweeps.report.hypervolume`)."""
    failed_trials: int
    stopped_trials: int
    """Trials the scheduler stopped early (not in the table)."""
    best_model_uri: str | None
    """The pruned model of the first feasible row of the table, when models are logged."""
    best_model_file: Path | None
    """Its prune_core file, copied into the sweep folder (``prune_core.load_pruned`` reads either)."""


def swept_keys(sweep: SweepSection) -> list[str]:
    """The config keys that differ between the sweep's trials, and the seed."""
    keys = list(space_entries(sweep.space)) if sweep.search == "optuna" else list(flatten(sweep.grid))
    return [*keys, SEED_KEY]


def summarize(config: SweepConfig, context: SweepContext, failed: int) -> SweepOutcome:
    """Per-trial table, front and hypervolume from the trials' MLflow runs, logged to the parent run."""
    import mlflow

    folder, uri, parent = Path(context.folder), context.tracking_uri, context.parent_run_id
    client = mlflow.MlflowClient(uri)
    runs = tracking.with_retries(
        client.search_runs,
        [context.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
        max_results=10_000,
    )
    keys = swept_keys(config.sweep)
    finished = [run for run in runs if "final_learnables" in run.data.metrics]
    table = pd.DataFrame([_table_row(run, keys) for run in finished], columns=["trial", *keys, *RESULT_COLUMNS])
    table = sort_trials(table, config.sweep.metric, config.sweep.mode, config.sweep.objectives)
    front = pareto_front(table, config.sweep.objectives) if len(table) else table
    scales = {"learnables": context.baseline_learnables}
    for metric in ("macs", "latency_ms"):  # the unpruned network's, as each trial measured it
        values = [run.data.metrics.get(f"unpruned_{metric}") for run in finished]
        scales[metric] = float(pd.Series(values, dtype=float).median())  # NaN when none (an earlier release)
    volume = hypervolume(front, config.sweep.objectives, scales)
    stopped = sum(run.data.tags.get("stop_reason") == STOPPED_EARLY for run in runs)
    for run in runs:  # lost by a killed driver and not created again by the resumed search: closed, not left RUNNING
        if run.data.tags.get(tracking.ORPHAN_TAG) == "true" and run.info.status == "RUNNING":
            tracking.close_run(uri, run.info.run_id, LOST)
    if len(table):
        table.to_csv(folder / "trials.csv", index=False)
        tracking.log_table(uri, parent, table, "trials.json")
        tracking.log_table(uri, parent, front, "pareto_front.json")
        baseline = (context.baseline_learnables, context.baseline_metrics["accuracy"])
        figure = accuracy_vs_learnables_figure(table, front, baseline)
        figure.savefig(folder / "accuracy_vs_learnables.png", dpi=120)
        tracking.with_retries(client.log_figure, parent, figure, "accuracy_vs_learnables.png")
    counts = {"trials_finished": len(table), "trials_failed": failed, "trials_stopped": stopped}
    counts["trials_infeasible"] = int((~table["feasible"].astype(bool)).sum())
    tracking.log_metrics(uri, parent, {**counts, "hypervolume": volume})
    tracking.with_retries(client.set_terminated, parent, "FINISHED" if not failed else "FAILED")
    feasible = table[table["feasible"].astype(bool)]
    best, best_file = None, None
    if len(feasible) and config.tracking.log_models:
        best = f"runs:/{feasible['run_id'].iloc[0]}/pruned_model"
        best_file = tracking.download_pruned(uri, best, folder / BEST_MODEL_FILE)
        if config.tracking.register_best:
            register_best(uri, best, config.tracking.register_best, parent)
    return SweepOutcome(
        folder, parent, uri, context.experiment_id, config.sweep, table, front, volume, failed, stopped, best, best_file
    )


def register_best(uri: str, model_uri: str, name: str, parent_run_id: str) -> str:
    """Register ``model_uri`` as a new version of the registered model ``name``, aliased :data:`BEST_ALIAS`;
    returns the version."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    version = tracking.with_retries(mlflow.register_model, model_uri, name, tags={"sweep_run_id": parent_run_id})
    client = mlflow.MlflowClient(uri)
    tracking.with_retries(client.set_registered_model_alias, name, BEST_ALIAS, version.version)
    return str(version.version)


def _table_row(run: Any, keys: list[str]) -> dict[str, Any]:
    metrics, tags = run.data.metrics, run.data.tags
    params = {current_name(key): value for key, value in run.data.params.items()}  # a trial of an earlier release
    return {
        "trial": run.info.run_name,
        **{key: params.get(key) for key in keys},
        "learnables": int(metrics["final_learnables"]),
        "reduction": metrics["final_reduction"],
        "val_accuracy": metrics["final_val_accuracy"],
        "macs": metrics.get("final_macs"),
        "latency_ms": metrics.get("final_latency_ms"),
        "feasible": tags.get("feasible", "true") == "true",  # a trial of an earlier release had no budgets
        "stop_reason": tags.get("stop_reason"),
        "run_id": run.info.run_id,
    }
