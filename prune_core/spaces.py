"""Channel spaces: sets of channels that must be pruned together.

Every tensor that flows through a traced network carries a *layout* on its channel dimension
(dim 1): a sequence of segments, each a run of channels that belongs to one *space*. A space is
divided into ``n_units`` equal units; pruning unit ``u`` of a space removes, in every segment of
that space, the ``u``-th block of ``segment.size / n_units`` consecutive elements. Spaces joined by
a residual add, a depthwise conv or a channel-wise gate are merged (union-find); a grouped conv
coarsens its spaces so that one unit is a whole number of its groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segment:
    """A run of ``size`` elements of a tensor's channel dimension that belongs to one space."""

    space: int
    size: int


Layout = tuple[Segment, ...]


class SpaceSet:
    """Union-find over channel spaces, with unit counts and non-prunable reasons at the roots."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._units: list[int] = []
        self._fixed: list[str | None] = []

    def new(self, n_units: int, fixed_reason: str | None = None) -> int:
        """Create a space of ``n_units`` units; ``fixed_reason`` makes it non-prunable."""
        self._parent.append(len(self._parent))
        self._units.append(n_units)
        self._fixed.append(fixed_reason)
        return len(self._parent) - 1

    def find(self, space: int) -> int:
        root = space
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[space] != root:
            self._parent[space], space = root, self._parent[space]
        return root

    def union(self, a: int, b: int) -> int:
        """Merge two spaces; the merged space's units are the common refinement's gcd."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        self._parent[rb] = ra
        self._units[ra] = math.gcd(self._units[ra], self._units[rb])
        self._fixed[ra] = self._fixed[ra] or self._fixed[rb]
        return ra

    def coarsen(self, space: int, groups: int) -> None:
        """Make every unit of ``space`` a whole number of ``groups`` equal channel groups."""
        root = self.find(space)
        self._units[root] = math.gcd(self._units[root], groups)

    def fix(self, space: int, reason: str) -> None:
        """Mark a space non-prunable (the first reason given is kept)."""
        root = self.find(space)
        if self._fixed[root] is None:
            self._fixed[root] = reason

    def units(self, space: int) -> int:
        return self._units[self.find(space)]

    def fixed_reason(self, space: int) -> str | None:
        return self._fixed[self.find(space)]

    def roots(self) -> list[int]:
        return sorted({self.find(s) for s in range(len(self._parent))})


def layout_size(layout: Layout) -> int:
    return sum(seg.size for seg in layout)


def scale_layout(layout: Layout, factor: int) -> Layout:
    """Layout after flattening channel-major with ``factor`` elements per channel."""
    return tuple(Segment(seg.space, seg.size * factor) for seg in layout)


def element_mask(layout: Layout, spaces: SpaceSet, unit_masks: dict[int, torch.Tensor]) -> torch.Tensor:
    """Boolean keep-mask over the elements of ``layout`` given per-space unit keep-masks.

    Spaces absent from ``unit_masks`` are kept entirely.
    """
    parts = []
    for seg in layout:
        root = spaces.find(seg.space)
        units = unit_masks.get(root)
        if units is None:
            parts.append(torch.ones(seg.size, dtype=torch.bool))
        else:
            parts.append(units.cpu().bool().repeat_interleave(seg.size // units.numel()))
    return torch.cat(parts) if parts else torch.ones(0, dtype=torch.bool)
