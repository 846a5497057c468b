"""The sweep's results: per-trial table, budgets, Pareto front of the objectives, its hypervolume, and the plot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ITERATION_METRICS = {"learnables": "min", "reduction": "max", "val_loss": "min", "val_accuracy": "max"}
"""What a trial reports after every pruning iteration (an early-stopping scheduler's choice), each with the
direction that is better."""
OBJECTIVE_METRICS = ("val_accuracy", "learnables", "reduction", "macs", "latency_ms")
"""What a finished trial reports as ``final_<metric>``: objectives, budgets and sort keys."""
DEFAULT_OBJECTIVES = {"val_accuracy": "max", "learnables": "min"}

RESULT_COLUMNS = ["learnables", "reduction", "val_accuracy", "macs", "latency_ms", "feasible", "stop_reason", "run_id"]
"""Per-trial results in the sweep table, after the trial name and its grid (or sampled) values."""


RESULT_ORDER = {"val_accuracy": False, "learnables": True, "reduction": False, "macs": True}
"""Result columns that order tied trials, each better first (ascending=True: smaller is better). Not the measured
latency: two runs of one network measure different ones, so it orders trials only as the metric or an objective."""

TOLERANCE = 1e-4
"""Accuracies (percent) this close are equal: one accuracy computed in float32 by two trials differs by about
1e-8, one validation sample in a million is 1e-4."""


def sort_trials(
    table: pd.DataFrame, metric: str, mode: str, objectives: dict[str, str] = DEFAULT_OBJECTIVES
) -> pd.DataFrame:
    """The trial table in one order whatever order its rows come in: best ``metric`` first (``mode`` max or min),
    ties by the ``objectives``, then by the other results (higher accuracy, fewer learnables, higher reduction,
    fewer MACs first), then by trial name (Ray Tune numbers the trials in grid order, so equal results keep the
    grid's order). Of trials equal in every objective, the first is the one :func:`pareto_front` keeps."""
    table = table.reset_index(drop=True)
    ties = {column: objectives[column] == "min" for column in objectives if column != metric}
    keys = _order_keys(table, {metric: mode == "min", **ties})
    return table.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)


def pareto_front(table: pd.DataFrame, objectives: dict[str, str] = DEFAULT_OBJECTIVES) -> pd.DataFrame:
    """The feasible rows no other feasible row dominates (at least as good in every objective, better in one),
    the minimised objectives first in its order. Accuracies within TOLERANCE are equal; of equal rows the one
    :func:`sort_trials` puts first is kept."""
    if "feasible" in table:
        table = table[table["feasible"].astype(bool)]
    order = sorted(objectives, key=lambda column: objectives[column] == "max")
    keys = _order_keys(table, {column: objectives[column] == "min" for column in order})
    kept: list[Any] = []
    for index in keys.sort_values(list(keys.columns), kind="stable").index:
        ranks = keys.loc[index, order]
        if not any((keys.loc[other, order] <= ranks).all() for other in kept):
            kept.append(index)
    return table.loc[kept]


def _order_keys(table: pd.DataFrame, first: dict[str, bool]) -> pd.DataFrame:
    """Rank columns that order ``table``: the ``first`` columns (ascending=True: smaller is better), then the
    remaining RESULT_ORDER columns, then the trial name."""
    directions = {**first, **{column: up for column, up in RESULT_ORDER.items() if column not in first}}
    keys = pd.DataFrame(
        {column: _ranks(table[column], up) for column, up in directions.items() if column in table}, index=table.index
    )
    if "trial" in table:
        keys["trial"] = table["trial"]
    return keys


def violations(metrics: dict[str, float], constraints: dict[str, float]) -> dict[str, float]:
    """How far a trial's ``final_<metric>`` values break each budget (``max_<metric>`` / ``min_<metric>``): > 0
    is broken."""
    amounts = {}
    for key, bound in constraints.items():
        kind, _, metric = key.partition("_")
        value = metrics[f"final_{metric}"]
        amounts[key] = value - bound if kind == "max" else bound - value
    return amounts


def hypervolume(front: pd.DataFrame, objectives: dict[str, str], scales: dict[str, float]) -> float:
    """The share of the objective box [unpruned, ideal] the front dominates, from 0 to 1.

    Each objective becomes a loss in [0, 1]: accuracy in percent over 100, reduction as it is, a size over the
    unpruned network's (``scales``); a minimised loss as it is, a maximised one as 1 minus it. The reference point
    is all ones (no accuracy, the unpruned size), so sweeps of one baseline compare.
    """
    from optuna._hypervolume import compute_hypervolume  # WFG, as optuna.visualization's hypervolume plot uses

    scale = {"val_accuracy": 100.0, "reduction": 1.0, **scales}
    columns = [front[c].astype(float) / scale[c] for c in objectives]
    losses = np.column_stack([v if objectives[c] == "min" else 1 - v for c, v in zip(objectives, columns, strict=True)])
    losses = np.clip(losses[(losses <= 1).all(axis=1)], 0, 1) if len(losses) else losses
    if not len(losses):
        return 0.0
    return float(compute_hypervolume(losses, np.ones(len(objectives))))


def _ranks(values: pd.Series, ascending: bool) -> pd.Series:
    """0 for the first value in this order, +1 at each step to a different value; accuracies within TOLERANCE
    of their neighbour in order (float32 rounding) count as equal."""
    ordered = values.sort_values(ascending=ascending, kind="stable")
    return (ordered.diff().abs() > _tolerance(values.name)).cumsum().reindex(values.index)


def _tolerance(column: object) -> float:
    return TOLERANCE if column == "val_accuracy" else 0.0


def accuracy_vs_learnables_figure(table: pd.DataFrame, front: pd.DataFrame, baseline: tuple[int, float]):
    """Scatter of every trial's (learnables, accuracy), the Pareto front and the unpruned baseline."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(table["learnables"], table["val_accuracy"], label="trials", alpha=0.7)
    axes.plot(front["learnables"], front["val_accuracy"], "r-o", label="Pareto front")
    axes.scatter([baseline[0]], [baseline[1]], marker="*", s=150, color="k", label="unpruned baseline")
    axes.set_xlabel("learnables")
    axes.set_ylabel("validation accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure
