"""How tensor operations move channel layouts: element-wise, broadcast, reshape, permute, index,
reduce, concatenate and split.

:class:`TensorRules` is the part of the channel analysis (:mod:`prune_core.channel_analysis`) that
knows no layers: it only moves layouts between dimensions and merges or fixes them.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

from prune_core.spaces import Layout, Segment, SpaceSet, layout_size
from prune_core.values import (
    ParamView,
    ShapeValue,
    SizeValue,
    TensorValue,
    group_dims,
    moved,
    normalize_dim,
    param_reshaped,
    permuted,
    reshaped,
    run_cuts,
    transposed,
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

    # -- dimensions ---------------------------------------------------------------------------

    def permute(self, node: fx.Node) -> Any:
        value, rest = self.value(node.args[0]), list(node.args[1:])
        name = node.target if isinstance(node.target, str) else node.target.__name__
        dims = value.dims if isinstance(value, TensorValue) else getattr(value, "axes", None)
        if dims is None:
            return self.unknown(node, f"{describe(node)} of a tensor without layout")
        if name == "permute":
            order = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            order = order or node.kwargs.get("dims")
            new = permuted(dims, list(order))
        elif name in ("transpose", "swapaxes"):
            new = transposed(dims, dim_arg(node, 1, "dim0"), dim_arg(node, 2, "dim1"))
        else:
            new = moved(dims, dim_arg(node, 1, "source"), dim_arg(node, 2, "destination"))
        return TensorValue(new) if isinstance(value, TensorValue) else ParamView(value.key, new)

    def reshape(self, node: fx.Node, size_args: list[Any]) -> Any:
        """view / reshape / flatten / squeeze / unsqueeze / expand, and their functional forms."""
        value = self.value(node.args[0])
        in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
        if in_shape is None or out_shape is None or not isinstance(value, (TensorValue, ParamView)):
            return self.unknown(node, f"{describe(node)} of a tensor without layout")
        if isinstance(value, ParamView) and node.target in ("expand", "expand_as") and len(in_shape) == len(out_shape):
            return ParamView(
                value.key, tuple(a if i == o else None for a, i, o in zip(value.axes, in_shape, out_shape, strict=True))
            )
        if isinstance(value, ParamView):
            axes = param_reshaped(value.axes, in_shape, out_shape)
            if axes is None:
                return self.unknown(node, f"{describe(node)} reshapes parameter {value.key}")
            return ParamView(value.key, axes)
        if node.target in ("expand", "expand_as"):
            if len(out_shape) != len(in_shape) or any(
                d is not None and a != b for d, a, b in zip(value.dims, in_shape, out_shape, strict=True)
            ):
                return self.unknown(node, f"{describe(node)} expands a channel dimension")
            new: list[Layout | None] | None = list(value.dims)
        else:
            result = reshaped(value.dims, in_shape, out_shape) if math.prod(in_shape) == math.prod(out_shape) else None
            if result is None:
                self._request_run_cuts(value.dims, in_shape, out_shape)
                return self.unknown(node, f"{describe(node)} mixes channels with other elements")
            new, ties = result
            for runs in ties:
                self.unify(runs, f"{describe(node)} splits channels unevenly")
        self._check_sizes(node, new, size_args)
        return TensorValue(tuple(new))

    def _request_run_cuts(self, dims: tuple[Layout | None, ...], in_shape: list[int], out_shape: list[int]) -> None:
        """Where a reshape splits a channel dim into ``(parts, rest)`` across segments, ask for cuts."""
        for ins, outs in group_dims(in_shape, out_shape) or []:
            layout = dims[ins[0]] if len(ins) == 1 else None
            if layout is not None and len(outs) == 2 and ins[0] != 0 and not layout_size(layout) % out_shape[outs[0]]:
                self.request_cuts(layout, run_cuts(layout, out_shape[outs[0]]))

    def _check_sizes(self, node: fx.Node, new: list[Layout | None], size_args: list[Any]) -> None:
        """A laid-out output dim sized by a literal or by another tensor's channel count would break
        once channels are removed: fix it (and the channels the size was read from)."""
        if len(size_args) != len(new):
            for arg in size_args:
                self.fix_value(self.value(arg), f"{describe(node)} shapes a tensor with a channel count")
            return
        for layout, arg in zip(new, size_args, strict=True):
            size = self.value(arg)
            if isinstance(size, SizeValue):
                if (
                    layout is not None
                    and size.layout is not None
                    and [s.size for s in layout] == [s.size for s in size.layout]
                ):
                    self.unify([layout, size.layout], "reshape")
                    continue
                self.fix_value(size, f"{describe(node)} shapes a tensor with a channel count")
                self.fix_layout(layout, f"{describe(node)} sizes channels by a computed number")
            elif layout is not None and isinstance(arg, int) and arg != -1:
                self.fix_layout(layout, f"{describe(node)} hard-codes the channel count")

    def getitem(self, node: fx.Node) -> Any:
        container, index = node.args
        value = self.value(container)
        if isinstance(value, tuple) and isinstance(index, int):
            return value[index]
        if isinstance(value, ShapeValue):
            if isinstance(index, int):
                layout = value.dims[index]
                return SizeValue(layout, (layout,) if layout else ())
            return ShapeValue(value.dims[index]) if isinstance(index, slice) else None
        if isinstance(value, (TensorValue, ParamView)) and shape_of(container) is not None:
            return self._index(node, value, index if isinstance(index, tuple) else (index,))
        if value is None and shape_of(container) is None:
            return None  # indexing some other non-tensor value
        return self.unknown(node, "tensor indexing")

    def _index(self, node: fx.Node, value: Any, index: tuple) -> Any:
        """Basic indexing: full slices keep a dim, ints drop it, partial slices keep a non-channel dim."""
        dims = list(self.live(value).dims if isinstance(value, TensorValue) else value.axes)
        if any(item is Ellipsis for item in index):
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (len(dims) - len(index) + 1) + index[at + 1 :]
        out: list = []
        for position, item in enumerate(index):
            if item is None:
                out.append(None)
                continue
            if position >= len(dims) or not isinstance(item, (int, slice)):
                return self.unknown(node, "advanced tensor indexing")
            entry = dims[position]
            whole = isinstance(item, slice) and item == slice(None)
            if isinstance(value, TensorValue) and entry is not None and not whole:
                return self.unknown(node, "indexing along channels")
            if not isinstance(item, int):
                out.append(entry if whole or isinstance(value, TensorValue) else None)
        out += dims[len(index) :]
        return TensorValue(tuple(out)) if isinstance(value, TensorValue) else ParamView(value.key, tuple(out))

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

    def size_query(self, node: fx.Node) -> Any:
        """``x.shape``, ``x.size()``, ``x.size(d)``: sizes that remember the channels they count."""
        value = self.value(node.args[0])
        if not isinstance(value, TensorValue):
            return None
        if node.op == "call_function" and node.args[1] != "shape":
            return None  # ndim, dtype, device ...
        which = dim_arg(node, 1, "dim") if node.op == "call_method" else None
        if which is None:
            return ShapeValue(value.dims)
        layout = value.dims[normalize_dim(which, len(value.dims))]
        return SizeValue(layout, (layout,) if layout else ())

    def size_arithmetic(self, node: fx.Node) -> SizeValue | None:
        sources = tuple(
            layout for arg in node.args if isinstance(self.value(arg), SizeValue) for layout in self.value(arg).sources
        )
        return SizeValue(None, sources) if sources else None


def _with_new_dim(value: Any, dim: int) -> Any:
    """``value`` seen through ``unsqueeze(dim)``."""
    if isinstance(value, TensorValue):
        return TensorValue((*value.dims[:dim], None, *value.dims[dim:]))
    if isinstance(value, ParamView):
        return ParamView(value.key, (*value.axes[:dim], None, *value.axes[dim:]))
    return value
