"""Fine-tuning options (MATLAB's ``trainingOptions``, with Pythonic names), validated on creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from prune_core.checks import (
    boolean,
    fraction,
    fraction_below_one,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
)

SOLVERS = ("sgdm", "adam", "rmsprop")
SHUFFLE = ("every-epoch", "once", "never")
LEARN_RATE_SCHEDULES = ("none", "piecewise", "cosine")
METRICS = ("accuracy", "rmse")
HIGHER_IS_BETTER = {"accuracy"}


@dataclass
class TrainingOptions:
    """How the network is fine-tuned between pruning steps.

    ``validation_data`` accepts what ``compress_network`` accepts for training data: a Dataset,
    a DataLoader or a ``(predictors, targets)`` pair of tensors. ``validation_frequency`` is in
    mini-batches. ``device="auto"`` means CUDA when available. ``objective_metric_name`` is the
    value ``validation_threshold`` is compared with: ``"loss"`` or one of ``metrics``.

    ``learn_rate_schedule`` is applied per mini-batch over one training run (each pruning
    iteration's fine-tuning restarts it): ``"none"`` keeps ``initial_learn_rate``; ``"piecewise"``
    multiplies it by ``learn_rate_drop_factor`` every ``learn_rate_drop_period`` epochs;
    ``"cosine"`` anneals it to ``learn_rate_floor`` after a linear warm-up over the first
    ``warmup_fraction`` of the steps (see :func:`prune_core.schedules.learn_rate_factor`).
    ``carry_optimizer_state`` keeps the optimizer's state (momentum, Adam moments, step count)
    of every kept channel when ``compress_network`` compacts the network, instead of starting
    each pruning iteration with a fresh optimizer.
    """

    solver: str = "sgdm"
    initial_learn_rate: float = 0.01
    learn_rate_schedule: str = "none"
    learn_rate_drop_factor: float = 0.1
    learn_rate_drop_period: int = 10
    learn_rate_floor: float = 0.0
    warmup_fraction: float = 0.0
    carry_optimizer_state: bool = False
    momentum: float = 0.9
    l2_regularization: float = 1e-4
    mini_batch_size: int = 128
    max_epochs: int = 1
    shuffle: str = "every-epoch"
    validation_data: Any = None
    validation_frequency: int = 50
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    objective_metric_name: str = "loss"
    device: str = "auto"
    seed: int | None = 0
    verbose_frequency: int = 50

    def __post_init__(self) -> None:
        one_of("TrainingOptions.solver", self.solver, SOLVERS)
        one_of("TrainingOptions.shuffle", self.shuffle, SHUFFLE)
        positive_number("TrainingOptions.initial_learn_rate", self.initial_learn_rate)
        one_of("TrainingOptions.learn_rate_schedule", self.learn_rate_schedule, LEARN_RATE_SCHEDULES)
        fraction("TrainingOptions.learn_rate_drop_factor", self.learn_rate_drop_factor)
        for name in (
            "mini_batch_size",
            "max_epochs",
            "learn_rate_drop_period",
            "validation_frequency",
            "verbose_frequency",
        ):
            positive_int(f"TrainingOptions.{name}", getattr(self, name))
        for name in ("momentum", "l2_regularization", "learn_rate_floor"):
            non_negative_number(f"TrainingOptions.{name}", getattr(self, name))
        if self.learn_rate_floor > self.initial_learn_rate:
            raise ValueError(
                f"TrainingOptions.learn_rate_floor={self.learn_rate_floor!r} is above "
                f"initial_learn_rate={self.initial_learn_rate!r}; use a floor in [0, initial_learn_rate]."
            )
        fraction_below_one("TrainingOptions.warmup_fraction", self.warmup_fraction)
        boolean("TrainingOptions.carry_optimizer_state", self.carry_optimizer_state)
        self.metrics = list(self.metrics)
        for metric in self.metrics:
            one_of("TrainingOptions.metrics", metric, METRICS)
        one_of("TrainingOptions.objective_metric_name", self.objective_metric_name, ("loss", *self.metrics))
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as err:
                raise ValueError(f"TrainingOptions.device={self.device!r} is not a torch device ({err}).") from None

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA where available, else the CPU; any other name as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
