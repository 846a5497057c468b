"""Running sums of per-channel Taylor scores at the pruning points, one mini-batch at a time."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from prune_core import hooks

ScoreState = tuple[list[torch.Tensor] | None, int]


class TaylorScoreSums:
    """Per-channel Taylor score sums at each pruning point (channels on ``point_dims[i]``) and the
    number of mini-batches they cover."""

    def __init__(self, point_dims: list[int]) -> None:
        self.point_dims = point_dims
        self.sums: list[torch.Tensor] | None = None
        self.batches = 0

    def add(self, activations: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor | None]) -> None:
        """Add one mini-batch's scores; a point the loss does not depend on (``None``) adds zeros."""
        with torch.no_grad():
            for total, dim, act, grad in zip(
                self._totals(activations), self.point_dims, activations, gradients, strict=True
            ):
                if grad is not None:
                    hooks.add_taylor_score(total, dim, act, grad)
        self.batches += 1

    def add_on_backward(self, activations: Sequence[torch.Tensor]) -> None:
        """Add this mini-batch's scores during the next backward pass through ``activations``."""
        for total, dim, act in zip(self._totals(activations), self.point_dims, activations, strict=True):
            # the hook holds a detached alias, not ``act`` itself: no reference cycle keeps the activation alive
            act.register_hook(functools.partial(hooks.add_taylor_score, total, dim, act.detach()))
        self.batches += 1

    def _totals(self, activations: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The running sums, started at zero on each activation's device and dtype."""
        if self.sums is None:
            self.sums = [
                torch.zeros(a.shape[dim], device=a.device, dtype=a.dtype)
                for a, dim in zip(activations, self.point_dims, strict=True)
            ]
        return self.sums

    def means(self) -> list[torch.Tensor]:
        """The mini-batch average of the scores at every point (on the CPU)."""
        if self.sums is None or not self.batches:
            raise RuntimeError(
                "no Taylor scores accumulated: call update_score(activations, gradients) on at least "
                "one mini-batch before update_prunables (or use criterion='l1' or 'random')."
            )
        return [total.cpu() / self.batches for total in self.sums]

    def state(self) -> ScoreState:
        return self.sums, self.batches

    def load(self, state: ScoreState) -> None:
        self.sums, self.batches = state
