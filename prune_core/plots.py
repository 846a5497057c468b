"""The pruning-progress figure (MATLAB's pruning progress plot)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from prune_core.results import PruningInfo


def pruning_progress_figure(info: PruningInfo) -> Figure:
    """Learnables per pruning iteration, fine-tuning loss, and the validation metrics."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8), layout="constrained")
    learn_ax, loss_ax, val_ax = fig.subplots(3, 1)
    pruning = info.pruning_history
    learn_ax.plot(pruning["iteration"], pruning["learnables"], marker="^", color="tab:green")
    learn_ax.set(title="Learnables after each pruning iteration", xlabel="Pruning iteration", ylabel="Learnables")
    training = info.training_history
    if not training.empty:
        loss_ax.plot(training["iteration"], training["loss"], color="tab:orange", linewidth=0.8)
    loss_ax.set(title="Fine-tuning mini-batch loss", xlabel="Fine-tuning iteration", ylabel="Loss")
    val_columns = [c for c in pruning.columns if c.startswith("val_")]
    for column in val_columns:
        val_ax.plot(pruning["iteration"], pruning[column], marker="o", label=column)
    if val_columns:
        val_ax.legend()
    val_ax.set(title="Validation after each pruning iteration", xlabel="Pruning iteration")
    for ax in (learn_ax, loss_ax, val_ax):
        ax.grid(True)
    return fig
