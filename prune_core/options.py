"""Fine-tuning options (MATLAB's ``trainingOptions``, with Pythonic names), validated on creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SOLVERS = ("sgdm", "adam", "rmsprop")
SHUFFLE = ("every-epoch", "once", "never")
METRICS = ("accuracy", "rmse")
HIGHER_IS_BETTER = {"accuracy"}


@dataclass
class TrainingOptions:
    """How the network is fine-tuned between pruning steps.

    ``validation_data`` accepts what ``compress_network`` accepts for training data: a Dataset,
    a DataLoader or a ``(predictors, targets)`` pair of tensors. ``validation_frequency`` is in
    mini-batches. ``device="auto"`` means CUDA when available. ``objective_metric_name`` is the
    value ``validation_threshold`` is compared with: ``"loss"`` or one of ``metrics``.
    """

    solver: str = "sgdm"
    initial_learn_rate: float = 0.01
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
        _one_of("solver", self.solver, SOLVERS)
        _one_of("shuffle", self.shuffle, SHUFFLE)
        _positive_number("initial_learn_rate", self.initial_learn_rate)
        _positive_int("mini_batch_size", self.mini_batch_size)
        _positive_int("max_epochs", self.max_epochs)
        _positive_int("validation_frequency", self.validation_frequency)
        _positive_int("verbose_frequency", self.verbose_frequency)
        for name in ("momentum", "l2_regularization"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"TrainingOptions.{name}={value!r} is not allowed; use a number >= 0.")
        self.metrics = list(self.metrics)
        for metric in self.metrics:
            _one_of("metrics", metric, METRICS)
        _one_of("objective_metric_name", self.objective_metric_name, ("loss", *self.metrics))
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as err:
                raise ValueError(f"TrainingOptions.device={self.device!r} is not a torch device ({err}).") from None

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"TrainingOptions.{name}={value!r} is not supported; use one of {', '.join(allowed)}.")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"TrainingOptions.{name}={value!r} is not allowed; use a positive integer.")


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"TrainingOptions.{name}={value!r} is not allowed; use a number > 0.")
