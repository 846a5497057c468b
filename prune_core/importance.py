"""Filter importance criteria and the global ranking that picks which filters to remove."""

from __future__ import annotations

import torch

from prune_core.checks import one_of

CRITERIA = ("taylor", "l1", "random")
GROUP_REDUCTIONS = ("sum", "mean")
"""How a coupled group's layers' normalised scores combine into one score per unit."""


def check_criterion(criterion: str) -> str:
    one_of("criterion", criterion, CRITERIA)
    return criterion


def check_group_reduction(group_reduction: str) -> str:
    one_of("group_reduction", group_reduction, GROUP_REDUCTIONS)
    return group_reduction


def taylor_batch_scores(activation: torch.Tensor, gradient: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """First-order Taylor score of each channel for one mini-batch (Molchanov et al. 2017).

    For an activation ``a`` and gradient ``g = dL/da`` with batch dim 0 and channels on ``dim``
    (1 for a conv's ``(N, C, *spatial)``, the last for a Linear's ``(N, *tokens, C)``):
    ``score[c] = mean_n | mean_positions(a[n, c] * g[n, c]) |``.
    """
    product = (activation * gradient).movedim(dim, 1).flatten(2)
    per_example = product.mean(dim=2) if product.shape[2] else product.squeeze(2)
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
