"""What a compress_network run hands back: its outcome and histories, and the per-iteration results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

PRUNE_PHASE, FINAL_PHASE = "prune", "final"
"""The ``phase`` of a history row: the pruning loop, or the final fine-tuning after it."""

GOAL_REACHED = "Learnables reduction goal reached."
MAX_COMPRESSION = "Maximum compression reached."
THRESHOLD_EXCEEDED = "Validation threshold exceeded."
DIVERGED = "Training diverged."
"""Why a run stopped (``PruningInfo.stop_reason``), MATLAB's wording."""


@dataclass
class PruningInfo:
    """Histories and outcome of a :func:`~prune_core.compress_network` run (MATLAB's ``info``).

    Every history has a ``phase`` column: ``"prune"`` for the pruning loop (row 0 of
    ``pruning_history`` is the original network) and ``"final"`` for the final fine-tuning, whose
    ``pruning_history`` row is the last one.
    """

    pruning_history: pd.DataFrame
    training_history: pd.DataFrame
    validation_history: pd.DataFrame
    pruned_layers: list[str]
    stop_reason: str
    original_learnables: int
    learnables: int
    figure: Any = None

    @property
    def reduction(self) -> float:
        """Achieved share of the original learnables removed."""
        return 1.0 - self.learnables / self.original_learnables

    @property
    def pruning_iterations(self) -> int:
        """Pruning iterations completed (the final fine-tuning is not one)."""
        history = self.pruning_history
        return int(history.loc[history["phase"] == PRUNE_PHASE, "iteration"].max())


@dataclass(frozen=True)
class IterationResult:
    """What :func:`~prune_core.compress_network` passes to its callbacks after each pruning
    iteration, and once after the final fine-tuning (``row["phase"] == "final"``)."""

    row: dict
    """This iteration's pruning-history row."""
    training_rows: list[dict]
    """This iteration's fine-tuning mini-batch rows (training-history rows)."""
    validation_rows: list[dict]
    """This iteration's validation rows."""
    checkpoint: Path | None
    """The checkpoint written after this iteration, if one was."""
