"""Filter importance criteria and the global ranking that picks which filters to remove."""

from __future__ import annotations

import torch
from torch import nn

from prune_core.checks import one_of

GROUP_REDUCTIONS = ("sum", "mean")
"""How a coupled group's layers' normalised scores combine into one score per unit."""


class Criterion:
    """How important each filter of a layer is. A criterion that ``uses_gradients`` is given the
    Taylor scores accumulated at the layer's pruning point (the fine-tuning loop then runs scored
    mini-batches before every pruning step); the others are given ``None``."""

    name = ""
    uses_gradients = False

    def filter_scores(self, layer: nn.Module, accumulated: torch.Tensor | None) -> torch.Tensor:
        """One score per filter (output channel or unit) of ``layer``; higher is more important."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self.name)


class Taylor(Criterion):
    """First-order Taylor importance (Molchanov et al. 2017): see :func:`taylor_batch_scores`."""

    name, uses_gradients = "taylor", True

    def filter_scores(self, layer: nn.Module, accumulated: torch.Tensor | None) -> torch.Tensor:
        return accumulated


class L1(Criterion):
    """The L1 norm of each filter's weights."""

    name = "l1"

    def filter_scores(self, layer: nn.Module, accumulated: torch.Tensor | None) -> torch.Tensor:
        return l1_filter_norms(layer.weight).cpu()


class RandomScores(Criterion):
    """Uniform noise: the baseline every criterion should beat."""

    name = "random"

    def filter_scores(self, layer: nn.Module, accumulated: torch.Tensor | None) -> torch.Tensor:
        return torch.rand(layer.weight.shape[0])


CRITERIA: dict[str, Criterion] = {c.name: c for c in (Taylor(), L1(), RandomScores())}


def check_criterion(criterion: str | Criterion) -> Criterion:
    """The criterion named ``criterion`` (one of :data:`CRITERIA`), or ``criterion`` itself."""
    if isinstance(criterion, Criterion):
        return criterion
    one_of("criterion", criterion, tuple(CRITERIA))
    return CRITERIA[criterion]


def check_group_reduction(group_reduction: str) -> str:
    one_of("group_reduction", group_reduction, GROUP_REDUCTIONS)
    return group_reduction


def taylor_batch_scores(activation: torch.Tensor, gradient: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """First-order Taylor score of each channel for one mini-batch (Molchanov et al. 2017).

    For an activation ``a`` and gradient ``g = dL/da`` with batch dim 0 and channels on ``dim``
    (1 for a conv's ``(N, C, *spatial)``, the last for a Linear's ``(N, *tokens, C)``):
    ``score[c] = mean_n | mean_positions(a[n, c] * g[n, c]) |``.
    """
    product = (activation * gradient).movedim(dim, 1)
    per_example = product.reshape(*product.shape[:2], -1).mean(dim=2)  # a Linear's (N, C): one position
    return per_example.abs().mean(dim=0)


def l1_filter_norms(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of each filter (output channel) of a conv weight."""
    return weight.detach().abs().flatten(1).sum(dim=1)


def normalized(scores: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """L2-normalise one layer's unit scores over its remaining units (pruned units score 0)."""
    scores = scores * alive
    norm = scores.norm()
    return scores / norm if norm > 0 else scores


def rank_units(group_scores: list[torch.Tensor], alive: list[torch.Tensor], limit: int) -> list[tuple[int, int]]:
    """Up to ``limit`` alive ``(group, unit)`` pairs, lowest score first, across all groups.

    Never includes the last alive unit of a group, so taking any prefix keeps every group alive.
    """
    entries = sorted(
        (float(scores[u]), g, u)
        for g, (scores, keep) in enumerate(zip(group_scores, alive, strict=True))
        for u in torch.nonzero(keep).flatten().tolist()
    )
    remaining = [int(keep.sum()) for keep in alive]
    chosen: list[tuple[int, int]] = []
    for _, g, u in entries:
        if len(chosen) >= limit:
            break
        if remaining[g] > 1:
            chosen.append((g, u))
            remaining[g] -= 1
    return chosen


def keep_multiples(ranked: list[tuple[int, int]], alive: list[int], multiple: int) -> list[tuple[int, int]]:
    """The ranked ``(group, unit)`` removals, cut per group so that each group keeps a multiple of
    ``multiple`` units (or all of them); lowest-ranked units go first. ``alive``: units per group."""
    if multiple == 1:
        return ranked
    wanted = [0] * len(alive)
    for g, _ in ranked:
        wanted[g] += 1
    allowed = [a - min(a, -(-(a - w) // multiple) * multiple) for a, w in zip(alive, wanted, strict=True)]
    kept: list[tuple[int, int]] = []
    for g, u in ranked:
        if allowed[g] > 0:
            kept.append((g, u))
            allowed[g] -= 1
    return kept
