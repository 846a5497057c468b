"""How tensor operations combine channel layouts: element-wise, broadcast, reduce, softmax,
concatenate, stack and split.

:class:`TensorRules` holds the analysis state (values, spaces, bound parameters) and the layout
operations every rule uses; :class:`prune_core.shape_rules.ShapeRules` adds the operations that
move layouts between dimensions, and :class:`prune_core.channel_analysis.ChannelAnalysis` the
layers. None of these rules knows a layer.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

from prune_core.spaces import Layout, Segment, SpaceSet
from prune_core.values import (
    ParamView,
    ShapeValue,
    SizeValue,
    TensorValue,
    normalize_dim,
)


def meta_of(node: Any) -> Any:
    return node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None


def shape_of(node: Any) -> list[int] | None:
    meta = meta_of(node)
    return list(meta.shape) if isinstance(meta, TensorMetadata) else None


def describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target}"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return f"operation {target} in {stack[-1][0]}" if stack and stack[-1][0] else f"operation {target}"


def dim_arg(node: fx.Node, position: int, name: str, default: Any = None) -> Any:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


class TensorRules:
    """Layout rules for tensor operations; subclasses add layers and the dispatch."""

    def __init__(self, spaces: SpaceSet) -> None:
        self.spaces = spaces
        self.values: dict[fx.Node, Any] = {}
        self.bound: dict[str, dict[int, Layout]] = {}
        """Parameter key -> {dimension: layout} for parameters sliced with channels."""
        self.opaque: dict[str, str] = {}
        """Parameter key -> why it is used in a way the analysis cannot follow."""
        self.cut_requests: list[tuple[int, int]] = []
        """(space, parts): a split needed the space's segments cut into that many equal parts."""

    # -- values -------------------------------------------------------------------------------

    def value(self, arg: Any) -> Any:
        return self.values.get(arg) if isinstance(arg, fx.Node) else None

    def tensor(self, arg: Any) -> TensorValue | None:
        value = self.value(arg)
        return value if isinstance(value, TensorValue) else None

    def live(self, value: TensorValue) -> TensorValue:
        """``value`` with the layouts that can no longer be pruned dropped: what happens along
        them (pooling, reductions, indexing) cannot make a network wrong."""
        return TensorValue(
            tuple(
                None if layout and all(self.spaces.fixed_reason(seg.space) for seg in layout) else layout
                for layout in value.dims
            )
        )

    def fresh(self, meta: Any, reason: str | None) -> Any:
        """A new value for an output the analysis cannot relate to its inputs: every non-batch
        dimension gets a space of its own (non-prunable when ``reason`` is given)."""
        if isinstance(meta, TensorMetadata):
            shape = list(meta.shape)
            dims = [None] + [(Segment(self.spaces.new(size, reason), size),) for size in shape[1:]]
            return TensorValue(tuple(dims[: len(shape)]))
        if isinstance(meta, (tuple, list)):
            return tuple(self.fresh(m, reason) for m in meta)
        return None

    def fix_value(self, value: Any, reason: str) -> None:
        if isinstance(value, (TensorValue, ShapeValue)):
            for layout in value.dims:
                self.fix_layout(layout, reason)
        elif isinstance(value, SizeValue):
            for layout in value.sources:
                self.fix_layout(layout, reason)
        elif isinstance(value, ParamView):
            self.opaque.setdefault(value.key, reason)
        elif isinstance(value, tuple):
            for item in value:
                self.fix_value(item, reason)

    def fix_layout(self, layout: Layout | None, reason: str) -> None:
        for seg in layout or ():
            self.spaces.fix(seg.space, reason)

    def fix_args(self, args: Any, reason: str) -> None:
        def visit(arg: Any) -> Any:
            self.fix_value(self.values.get(arg), reason)
            return arg

        fx.node.map_arg(args, visit)

    def unknown(self, node: fx.Node, reason: str) -> Any:
        self.fix_args((node.args, node.kwargs), reason)
        return self.fresh(meta_of(node), reason)

    def unify(self, layouts: list[Layout], reason: str) -> Layout:
        """Merge layouts that describe the same channels; mismatching splits become fixed."""
        base = layouts[0]
        for other in layouts[1:]:
            if [s.size for s in other] == [s.size for s in base]:
                for a, b in zip(base, other, strict=True):
                    self.spaces.union(a.space, b.space)
            else:
                for layout in (base, other):
                    self.fix_layout(layout, reason)
        return base

    def request_cuts(self, layout: Layout, offsets: list[int]) -> None:
        """Ask for the segments of ``layout`` to be cut at ``offsets``: the producing layers' units
        are then made of equal parts in another pass of the analysis."""
        start = 0
        for seg in layout:
            inner = [offset - start for offset in offsets if start < offset < start + seg.size]
            if inner and self.spaces.fixed_reason(seg.space) is None:
                self.cut_requests.append((seg.space, seg.size // math.gcd(seg.size, *inner)))
            start += seg.size

    def bind(self, view: ParamView, dim: int, layout: Layout) -> None:
        """Parameter dimension ``view.axes[dim]`` is sliced with ``layout``."""
        axis = view.axes[dim]
        known = self.bound.setdefault(view.key, {})
        known[axis] = (
            self.unify([known[axis], layout], f"parameter {view.key} used on differently laid out channels")
            if axis in known
            else layout
        )

    # -- element-wise -------------------------------------------------------------------------

    def channelwise(self, node: fx.Node) -> Any:
        """An operation on one tensor that keeps every laid-out dimension (activations, pooling)."""
        x = self.tensor(node.args[0]) if node.args else None
        in_shape, out_shape = shape_of(node.args[0]) if node.args else None, shape_of(node)
        if x is None or out_shape is None or in_shape is None or len(out_shape) != len(in_shape):
            return self.unknown(node, f"{describe(node)} changes the tensor's dimensions")
        x = self.live(x)
        for layout, a, b in zip(x.dims, in_shape, out_shape, strict=True):
            if layout is not None and a != b:
                return self.unknown(node, f"{describe(node)} resizes a channel dimension")
        self.fix_args((node.args[1:], node.kwargs), f"{describe(node)} with tensor arguments")
        return x

    def broadcast(self, node: fx.Node, operands: list[Any]) -> Any:
        """Element-wise operation of broadcast operands: laid-out dims merge; a parameter whose
        dimension meets channels is sliced with them; anything else along channels fixes them."""
        out_shape = shape_of(node)
        shaped = [(self.value(arg), shape_of(arg)) for arg in operands if shape_of(arg) is not None]
        if out_shape is None or not any(isinstance(value, TensorValue) for value, _ in shaped):
            return self.unknown(node, f"{describe(node)} of parameters or constants only")
        result: list[Layout | None] = []
        for i, size in enumerate(out_shape):
            result.append(self._broadcast_dim(node, shaped, i - len(out_shape), size))
        return TensorValue(tuple(result))

    def _broadcast_dim(self, node: fx.Node, shaped: list, offset: int, size: int) -> Layout | None:
        entries = []  # (value, dim) of each operand that spans this output dim in full
        for value, shape in shaped:
            dim = len(shape) + offset
            if dim >= 0 and shape[dim] == size and size > 1:
                entries.append((value, dim))
        layouts = [v.dims[d] for v, d in entries if isinstance(v, TensorValue) and v.dims[d] is not None]
        if not layouts:
            return None
        reason = f"{describe(node)} combines channels with another dimension"
        layout = self.unify(layouts, f"{describe(node)} of differently concatenated channels")
        for value, dim in entries:
            if isinstance(value, ParamView) and value.axes[dim] is not None:
                self.bind(value, dim, layout)
            elif isinstance(value, ParamView):  # a broadcast or sliced parameter dim cannot be sliced
                self.fix_layout(layout, reason)
                self.fix_value(value, reason)
            elif not isinstance(value, TensorValue) or value.dims[dim] is None:
                self.fix_layout(layout, reason)  # only this dim: the operand's other dims are unaffected
        return layout

    # -- reductions, concatenation and splits -------------------------------------------------

    def reduce(self, node: fx.Node) -> Any:
        x, in_shape = self.tensor(node.args[0]), shape_of(node.args[0])
        dims = dim_arg(node, 1, "dim")
        keepdim = bool(dim_arg(node, 2, "keepdim", False))
        if x is None or dims is None or in_shape is None:
            return self.unknown(node, f"{describe(node)} over all dimensions")
        dims = {normalize_dim(d, len(in_shape)) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
        x = self.live(x)
        if 0 in dims or any(x.dims[d] is not None for d in dims):
            return self.unknown(node, f"{describe(node)} over the batch or a channel dimension")
        return TensorValue(
            tuple(None if d in dims else layout for d, layout in enumerate(x.dims) if keepdim or d not in dims)
        )

    def softmax(self, node: fx.Node) -> Any:
        """Softmax along one dim: element-wise for the channels of the others; across channels it
        would normalise over the pruned ones too."""
        x, in_shape, dim = self.tensor(node.args[0]), shape_of(node.args[0]), dim_arg(node, 1, "dim")
        if x is None or in_shape is None or not isinstance(dim, int):
            return self.unknown(node, f"{describe(node)} without a dimension")
        x = self.live(x)
        if x.dims[normalize_dim(dim, len(in_shape))] is not None:
            return self.unknown(node, f"{describe(node)} across channels")
        return x

    def concat(self, node: fx.Node) -> Any:
        tensors = list(node.args[0])
        shapes = [shape_of(t) for t in tensors]
        out_shape = shape_of(node)
        if out_shape is None or any(s is None for s in shapes):
            return self.unknown(node, "concatenation of non-tensors")
        dim = normalize_dim(dim_arg(node, 1, "dim", 0), len(out_shape))
        values = [self.value(t) for t in tensors]
        along = [v.dims[dim] if isinstance(v, TensorValue) else None for v in values]
        if any(layout is not None for layout in along) or out_shape[dim] == 0:
            if any(layout is None for layout in along):
                return self.unknown(node, "concatenation of channels with other values")
            merged: Layout | None = tuple(seg for layout in along for seg in layout)
        else:
            merged = None
        result = []
        for i, size in enumerate(out_shape):
            if i == dim:
                result.append(merged)
                continue
            result.append(self._broadcast_dim(node, list(zip(values, shapes, strict=True)), i - len(out_shape), size))
        return TensorValue(tuple(result))

    def stack(self, node: fx.Node) -> Any:
        """``torch.stack``: a concatenation along a new dimension, which holds no channels."""
        tensors, out_shape = list(node.args[0]), shape_of(node)
        shapes = [shape_of(t) for t in tensors]
        if out_shape is None or any(s is None for s in shapes):
            return self.unknown(node, "stack of non-tensors")
        dim = normalize_dim(dim_arg(node, 1, "dim", 0), len(out_shape))
        operands = [
            (_with_new_dim(self.value(t), dim), [*s[:dim], 1, *s[dim:]]) for t, s in zip(tensors, shapes, strict=True)
        ]
        return TensorValue(
            tuple(
                None if i == dim else self._broadcast_dim(node, operands, i - len(out_shape), size)
                for i, size in enumerate(out_shape)
            )
        )

    def split(self, node: fx.Node) -> Any:
        """``chunk`` / ``split`` along any dim. Along channels the pieces must cut at segment
        boundaries. Equal chunks are pruned in step (a chunk boundary moves with the channels);
        sizes given as numbers stay those numbers in the pruned network, so they fix the channels."""
        x, in_shape = self.tensor(node.args[0]), shape_of(node.args[0])
        metas = meta_of(node)
        if x is None or in_shape is None or not isinstance(metas, (tuple, list)):
            return self.unknown(node, f"{describe(node)} of a tensor without layout")
        dim = normalize_dim(dim_arg(node, 2, "dim", 0), len(in_shape))
        layout = x.dims[dim]
        if layout is None:
            return tuple(x for _ in metas)
        chunked = getattr(node.target, "__name__", node.target) == "chunk"
        pieces, current = [], list(layout)
        for meta in metas:
            want, piece = int(meta.shape[dim]), []
            while want > 0 and current and current[0].size <= want:
                piece.append(current.pop(0))
                want -= piece[-1].size
            if want:
                if chunked:
                    self.request_cuts(layout, list(itertools.accumulate(int(m.shape[dim]) for m in metas)))
                return self.unknown(node, f"{describe(node)} splits a channel group")
            pieces.append(tuple(piece))
        if chunked and len({tuple(seg.size for seg in piece) for piece in pieces}) == 1:
            self.unify(pieces, f"{describe(node)} of differently split channels")
        else:
            self.fix_layout(layout, f"{describe(node)} splits channels at given sizes")
        return tuple(TensorValue(x.dims[:dim] + (piece,) + x.dims[dim + 1 :]) for piece in pieces)


def _with_new_dim(value: Any, dim: int) -> Any:
    """``value`` seen through ``unsqueeze(dim)``."""
    if isinstance(value, TensorValue):
        return TensorValue((*value.dims[:dim], None, *value.dims[dim:]))
    if isinstance(value, ParamView):
        return ParamView(value.key, (*value.axes[:dim], None, *value.axes[dim:]))
    return value
