"""Abstract values of the channel analysis: what each traced value says about channels.

A tensor computed from the input is a :class:`TensorValue`: every dimension carries a channel
layout (:mod:`prune_core.spaces`) or ``None`` (a batch, spatial or token dimension). A conv's
output has its layout on dim 1, a Linear's on its last dim, and the layout follows permutes,
transposes and reshapes. A tensor that is a view of one of the model's parameters is a
:class:`ParamView`; its dimensions are bound to layouts where the parameter meets activations
(a layer scale, a class token, the weight of a functional conv). Sizes read from tensors are
:class:`SizeValue` s, so that a channel count used to shape another tensor is noticed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from prune_core.spaces import Layout, layout_size, scale_layout


@dataclass(frozen=True)
class TensorValue:
    """A tensor computed from the inputs: the layout of each dimension (``None``: not channels)."""

    dims: tuple[Layout | None, ...]

    def laid(self) -> list[Layout]:
        return [layout for layout in self.dims if layout is not None]


@dataclass(frozen=True)
class ParamView:
    """A view of parameter or buffer ``key`` (``"module.attr"``): ``axes[i]`` is the parameter
    dimension that dimension ``i`` shows in full, or ``None`` (an inserted, sliced or broadcast dim)."""

    key: str
    axes: tuple[int | None, ...]

    @property
    def is_whole(self) -> bool:
        """Whether this is the parameter itself, every dimension in place."""
        return self.axes == tuple(range(len(self.axes)))


@dataclass(frozen=True)
class ShapeValue:
    """``tensor.shape`` or ``tensor.size()``: the layout of each dimension."""

    dims: tuple[Layout | None, ...]


@dataclass(frozen=True)
class SizeValue:
    """One size read from a tensor. ``layout``: the channel layout it counts (``None`` for a
    derived number); ``sources``: the layouts it was computed from."""

    layout: Layout | None
    sources: tuple[Layout, ...]


def normalize_dim(dim: int, ndim: int) -> int:
    return dim % ndim if ndim else 0


def permuted(dims: tuple, order: list[int]) -> tuple:
    """The per-dimension entries of a tensor after ``permute(order)``."""
    return tuple(dims[normalize_dim(d, len(dims))] for d in order)


def transposed(dims: tuple, a: int, b: int) -> tuple:
    a, b = normalize_dim(a, len(dims)), normalize_dim(b, len(dims))
    result = list(dims)
    result[a], result[b] = result[b], result[a]
    return tuple(result)


def moved(dims: tuple, source: int, destination: int) -> tuple:
    rest = list(dims)
    item = rest.pop(normalize_dim(source, len(dims)))
    rest.insert(normalize_dim(destination, len(dims)), item)
    return tuple(rest)


def group_dims(in_shape: list[int], out_shape: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair up the dimensions of a reshape: runs of input and output dims with equal products.

    Size-1 dims form groups of their own where they can. ``None`` when the shapes do not match.
    """
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and j < len(out_shape) and in_shape[i] == out_shape[j]:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if i < len(in_shape) and in_shape[i] == 1:
            groups.append(([i], []))
            i += 1
            continue
        if j < len(out_shape) and out_shape[j] == 1:
            groups.append(([], [j]))
            j += 1
            continue
        ins, outs, a, b = [i], [j], in_shape[i] if i < len(in_shape) else 0, out_shape[j] if j < len(out_shape) else 0
        i, j = i + 1, j + 1
        while a != b and a and b:
            if a < b and i < len(in_shape):
                a, i = a * in_shape[i], i + 1
                ins.append(i - 1)
            elif b < a and j < len(out_shape):
                b, j = b * out_shape[j], j + 1
                outs.append(j - 1)
            else:
                return None
        if a != b:
            return None
        groups.append((ins, outs))
    return groups


def reshaped(
    dims: tuple[Layout | None, ...], in_shape: list[int], out_shape: list[int]
) -> tuple[list[Layout | None], list[list[Layout]]] | None:
    """Layouts after a reshape, and the runs it ties together; ``None`` where it would mix
    channels with other elements.

    A laid-out dim survives unchanged when it maps to one output dim of its size, and is scaled
    when it is the leading (channel-major) dim of a run merged into one output dim. Split into two
    dims ``(parts, rest)``, its layout must cut into ``parts`` alike runs: the second dim carries
    the first run, and the runs are tied (pruned in step).
    """
    groups = group_dims(in_shape, out_shape)
    if groups is None:
        return None
    result: list[Layout | None] = [None] * len(out_shape)
    ties: list[list[Layout]] = []
    for ins, outs in groups:
        laid = [i for i in ins if dims[i] is not None]
        if not laid:
            continue
        if ins == laid and len(outs) == 2 and ins[0] != 0:
            runs = split_runs(dims[ins[0]], out_shape[outs[0]])
            if runs is None:
                return None
            result[outs[1]] = runs[0]
            ties.append(runs)
            continue
        if len(outs) != 1 or laid != [ins[0]]:
            return None
        result[outs[0]] = scale_layout(dims[ins[0]], math.prod(in_shape[i] for i in ins[1:]))
    return result, ties


def split_runs(layout: Layout, parts: int) -> list[Layout] | None:
    """``layout`` cut at segment boundaries into ``parts`` runs of equal size and alike segments."""
    total = layout_size(layout)
    if total % parts:
        return None
    size, runs, current, filled = total // parts, [], [], 0
    for seg in layout:
        current.append(seg)
        filled += seg.size
        if filled > size:
            return None
        if filled == size:
            runs.append(tuple(current))
            current, filled = [], 0
    return runs if len({tuple(seg.size for seg in run) for run in runs}) == 1 else None


def run_cuts(layout: Layout, parts: int) -> list[int]:
    """The offsets where ``layout``'s segments must be cut for :func:`split_runs` to succeed."""
    total = layout_size(layout)
    size = total // parts
    ends = itertools.accumulate(seg.size for seg in layout)
    relative = {end % size for end in ends}
    return sorted({run * size + offset for run in range(parts) for offset in relative} - {0, total})


def param_reshaped(axes: tuple[int | None, ...], in_shape: list[int], out_shape: list[int]) -> tuple | None:
    """Axes of a parameter view after a reshape that only inserts or removes size-1 dims."""
    kept = [(axis, size) for axis, size in zip(axes, in_shape, strict=True) if size != 1]
    if [size for _, size in kept] != [size for size in out_shape if size != 1]:
        return None
    queue = iter(kept)
    return tuple(None if size == 1 else next(queue)[0] for size in out_shape)
