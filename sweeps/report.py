"""The sweep's results: per-trial table, Pareto front of accuracy against learnables, and its plot."""

from __future__ import annotations

import pandas as pd

RESULT_COLUMNS = ["learnables", "reduction", "val_accuracy", "stop_reason", "run_id"]
"""Per-trial results in the sweep table, after the trial name and its grid values."""


def pareto_front(table: pd.DataFrame, size: str = "learnables", quality: str = "val_accuracy") -> pd.DataFrame:
    """The rows no other row dominates (no more ``size`` and at least the ``quality``, one strictly),
    sorted by ``size``."""
    ordered = table.sort_values([size, quality], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row[quality] > best:
            keep.append(index)
            best = row[quality]
    return ordered.loc[keep]


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
