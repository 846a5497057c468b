"""The settings of one compress_network run besides its data, loss and training options, checked
together before any work."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune_core import importance
from prune_core.checks import (
    fraction,
    is_number,
    non_negative_int,
    one_of,
    positive_int,
    positive_int_or_auto,
    writable_folder,
)
from prune_core.options import TrainingOptions
from prune_core.progress import VERBOSITY
from prune_core.results import IterationResult
from prune_core.train import check_data

PLOTS = ("none", "pruning-progress")


@dataclass(frozen=True)
class PruningSettings:
    """compress_network's keyword arguments, by their names (see its docstring)."""

    learnables_reduction_goal: float | None = None
    learnables_reduction_increment: float = 0.05
    num_importance_score_iterations: int | str = "auto"
    layer_names: Sequence[str] | None = None
    criterion: str | importance.Criterion = "taylor"
    channel_multiple: int = 1
    group_reduction: str = "sum"
    validation_threshold: float | None = None
    final_fine_tuning_epochs: int = 0
    pruning_checkpoint_path: str | Path | None = None
    pruning_checkpoint_frequency: int = 1
    verbosity_level: str = "summary"
    plots: str = "none"
    callbacks: Sequence[Callable[[IterationResult], None]] = ()
    resume_from: str | Path | None = None

    def check(self, train_data: Any, options: TrainingOptions) -> None:
        """Raise a ValueError naming the first argument that is not allowed."""
        check_data("train_data", train_data)
        if options.validation_data is not None:
            check_data("options.validation_data", options.validation_data)
        if self.learnables_reduction_goal is not None:
            fraction("learnables_reduction_goal", self.learnables_reduction_goal)
        fraction("learnables_reduction_increment", self.learnables_reduction_increment)
        positive_int_or_auto("num_importance_score_iterations", self.num_importance_score_iterations)
        self._check_threshold(options)
        non_negative_int("final_fine_tuning_epochs", self.final_fine_tuning_epochs)
        if self.pruning_checkpoint_path is not None:
            writable_folder("pruning_checkpoint_path", Path(self.pruning_checkpoint_path))
        positive_int("pruning_checkpoint_frequency", self.pruning_checkpoint_frequency)
        one_of("verbosity_level", self.verbosity_level, VERBOSITY)
        one_of("plots", self.plots, PLOTS)
        importance.check_criterion(self.criterion)
        importance.check_group_reduction(self.group_reduction)
        if self.resume_from is not None and not Path(self.resume_from).is_file():
            raise ValueError(f"resume_from={str(self.resume_from)!r} is not an existing checkpoint file.")

    def _check_threshold(self, options: TrainingOptions) -> None:
        threshold = self.validation_threshold
        if threshold is None:
            return
        if options.validation_data is None:
            raise ValueError(
                "validation_threshold needs options.validation_data: set TrainingOptions(validation_data=...)."
            )
        if not is_number(threshold):
            raise ValueError(f"validation_threshold={threshold!r} is not allowed; use a number or None.")
