"""The sweep's results: per-trial table, Pareto front of accuracy against learnables, and its plot."""

from __future__ import annotations

import pandas as pd

RESULT_COLUMNS = ["learnables", "reduction", "val_accuracy", "stop_reason", "run_id"]
"""Per-trial results in the sweep table, after the trial name and its grid values."""


RESULT_ORDER = {"val_accuracy": False, "learnables": True, "reduction": False}
"""Result columns that order tied trials, each better first (ascending=True: smaller is better)."""

TOLERANCE = 1e-4
"""Accuracies (percent) this close are equal: one accuracy computed in float32 by two trials differs by about
1e-8, one validation sample in a million is 1e-4."""


def sort_trials(table: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The trial table in one order whatever order its rows come in: best ``metric`` first (``mode`` max or min),
    ties by the other results (higher accuracy, fewer learnables, higher reduction first), then by trial name
    (Ray Tune numbers the trials in grid order, so equal results keep the grid's order)."""
    table = table.reset_index(drop=True)
    directions = {metric: mode == "min", **{c: up for c, up in RESULT_ORDER.items() if c != metric and c in table}}
    keys = pd.DataFrame({column: _ranks(table[column], up) for column, up in directions.items()})
    if "trial" in table:
        keys["trial"] = table["trial"]
    return table.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)


def pareto_front(table: pd.DataFrame, size: str = "learnables", quality: str = "val_accuracy") -> pd.DataFrame:
    """The rows no other row dominates (no more ``size`` and at least the ``quality``, one strictly), sorted by
    ``size``. Accuracies within TOLERANCE are equal; of equal rows the one with the first trial name is kept."""
    keys = pd.DataFrame({size: table[size], quality: _ranks(table[quality], ascending=False)})
    if "trial" in table and "trial" not in keys:
        keys["trial"] = table["trial"]
    ordered = table.loc[keys.sort_values(list(keys.columns), kind="stable").index]
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row[quality] > best + _tolerance(quality):
            keep.append(index)
            best = row[quality]
    return ordered.loc[keep]


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
