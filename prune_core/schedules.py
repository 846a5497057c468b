"""Learn-rate schedules, applied per mini-batch by torch's ``LambdaLR``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from prune_core.options import TrainingOptions


def learn_rate_factor(options: TrainingOptions, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The multiple of ``options.initial_learn_rate`` used at mini-batch ``step`` (0-based) of a
    training run of ``total_steps`` mini-batches.

    - ``"none"``: 1.
    - ``"piecewise"``: ``learn_rate_drop_factor ** (epoch // learn_rate_drop_period)``, epoch 0-based.
    - ``"cosine"``: with ``W = floor(warmup_fraction * total_steps)`` warm-up steps, step ``k < W``
      uses ``initial * (k + 1) / (W + 1)`` (linear); then, with ``t = (k - W) / (total_steps - W)``,
      ``floor + (initial - floor) * (1 + cos(pi * t)) / 2``: the initial rate at the first step
      after the warm-up, the mean of the two half-way, and one step short of the floor at the last.
    """
    schedule = options.learn_rate_schedule
    if schedule == "piecewise":
        epoch = step // steps_per_epoch
        return options.learn_rate_drop_factor ** (epoch // options.learn_rate_drop_period)
    if schedule == "cosine":
        return cosine_factor(options, step, total_steps, options.warmup_fraction)
    return 1.0


def cosine_factor(options: TrainingOptions, step: int, total_steps: int, warmup_fraction: float) -> float:
    """The cosine schedule of :func:`learn_rate_factor`, with the given warm-up share."""
    warmup = math.floor(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = options.learn_rate_floor / options.initial_learn_rate
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    factor: Callable[[int], float],
    first_step: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` at ``factor(first_step)``; step it once per mini-batch.

    ``first_step`` continues a run part-way (a resumed final fine-tuning).
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: factor(first_step + k))


def run_factor(options: TrainingOptions, steps_per_epoch: int) -> Callable[[int], float]:
    """``options``' schedule over ``options.max_epochs`` epochs of ``steps_per_epoch`` mini-batches."""
    total = options.max_epochs * steps_per_epoch
    return lambda step: learn_rate_factor(options, step, total, steps_per_epoch)


def final_factor(options: TrainingOptions, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The final fine-tuning's schedule: cosine from the initial rate to the floor over ``epochs``
    epochs, whatever ``options.learn_rate_schedule`` is (no warm-up)."""
    total = epochs * steps_per_epoch
    return lambda step: cosine_factor(options, step, total, warmup_fraction=0.0)
