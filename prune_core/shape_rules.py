"""How tensor operations move channel layouts between dimensions: permute, transpose, reshape
(with the sizes it is given), indexing, and the sizes read from tensors."""

from __future__ import annotations

import math
from typing import Any

from torch import fx

from prune_core.spaces import Layout, layout_size
from prune_core.tensor_rules import TensorRules, describe, dim_arg, shape_of
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


class ShapeRules(TensorRules):
    """Layout rules for operations that move, split or merge dimensions."""

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
