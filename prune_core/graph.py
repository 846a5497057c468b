"""Trace a model with torch.fx and find which conv filters can be pruned together, exactly.

The analysis walks the traced graph once, giving every tensor a channel layout
(:mod:`prune_core.spaces`). Known operations propagate, merge, concatenate or split layouts;
an operation the analysis does not understand marks the channels it touches non-prunable, so
the engine never produces a network that computes something different.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from prune_core import ops
from prune_core.spaces import Layout, Segment, SpaceSet, layout_size, scale_layout


@dataclass(frozen=True)
class ConvRole:
    """A conv: consumes ``in_layout`` and produces ``out_layout`` (its filters)."""

    name: str
    in_layout: Layout
    out_layout: Layout
    groups: int


@dataclass(frozen=True)
class ChannelParamRole:
    """A module with one parameter per channel (BatchNorm) applied to ``layout``."""

    name: str
    layout: Layout


@dataclass(frozen=True)
class LinearRole:
    """A Linear layer reading features laid out as ``in_layout``."""

    name: str
    in_layout: Layout


@dataclass
class ChannelGraph:
    """Result of the channel analysis of one model."""

    spaces: SpaceSet
    convs: dict[str, ConvRole] = field(default_factory=dict)
    norms: dict[str, ChannelParamRole] = field(default_factory=dict)
    linears: dict[str, LinearRole] = field(default_factory=dict)
    points: dict[str, str] = field(default_factory=dict)
    """Conv name -> module whose output is that conv's pruning point (its BatchNorm, or itself)."""
    inplace_modules: dict[str, list[str]] = field(default_factory=dict)
    """Conv name -> modules (``inplace=True``) that overwrite its pruning point's output."""
    relu_after_point: dict[str, str] = field(default_factory=dict)
    """Conv name -> the ``nn.ReLU(inplace=True)`` that is the only consumer of its pruning point."""

    def producers(self) -> dict[int, list[str]]:
        """Space root -> names of the convs whose filters make up that space, in graph order."""
        result: dict[int, list[str]] = {}
        for role in self.convs.values():
            for seg in role.out_layout:
                result.setdefault(self.spaces.find(seg.space), []).append(role.name)
        return result


def trace_channels(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ChannelGraph:
    """Trace ``model`` on ``example_inputs`` and analyse its channel dependencies."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many exception types for untraceable code
        raise ValueError(
            f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}). "
            "The model's forward must be traceable: no data-dependent Python control flow."
        ) from err
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        for module, training in modes.items():
            module.training = training
    analysis = _ChannelAnalysis(gm)
    analysis.run()
    return analysis.graph


def _meta(node: Any) -> Any:
    return node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None


def _shape(node: Any) -> torch.Size | None:
    meta = _meta(node)
    return meta.shape if isinstance(meta, TensorMetadata) else None


def _is_layout(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) > 0 and isinstance(value[0], Segment)


class _ChannelAnalysis:
    """Abstract interpretation of a traced graph over channel layouts."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = ChannelGraph(spaces=SpaceSet())
        self.values: dict[fx.Node, Any] = {}
        self.module_nodes: dict[str, fx.Node] = {}
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    @property
    def spaces(self) -> SpaceSet:
        return self.graph.spaces

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.values[node] = self._visit(node)
        self._find_points()

    # -- helpers ------------------------------------------------------------------------------

    def _fresh(self, meta: Any, reason: str | None) -> Any:
        if isinstance(meta, TensorMetadata):
            if len(meta.shape) < 2:
                return None
            channels = int(meta.shape[1])
            return (Segment(self.spaces.new(channels, reason), channels),)
        if isinstance(meta, (tuple, list)):
            return tuple(self._fresh(m, reason) for m in meta)
        return None

    def _fix_value(self, value: Any, reason: str) -> None:
        if _is_layout(value):
            for seg in value:
                self.spaces.fix(seg.space, reason)
        elif isinstance(value, tuple):
            for item in value:
                self._fix_value(item, reason)

    def _fix_args(self, args: Any, reason: str) -> None:
        def visit(arg: Any) -> Any:
            self._fix_value(self.values.get(arg), reason)
            return arg

        fx.node.map_arg(args, visit)

    def _unknown(self, node: fx.Node, reason: str) -> Any:
        self._fix_args((node.args, node.kwargs), reason)
        return self._fresh(_meta(node), reason)

    def _layout_of(self, arg: Any) -> Layout | None:
        value = self.values.get(arg) if isinstance(arg, fx.Node) else None
        return value if _is_layout(value) else None

    def _unify(self, layouts: list[Layout], reason: str) -> Layout:
        """Merge layouts that describe the same channels; mismatching splits become fixed."""
        base = layouts[0]
        for other in layouts[1:]:
            if [s.size for s in other] == [s.size for s in base]:
                for a, b in zip(base, other, strict=True):
                    self.spaces.union(a.space, b.space)
            else:
                for layout in (base, other):
                    self._fix_value(layout, reason)
        return base

    # -- dispatch -----------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self._fresh(_meta(node), "network input")
        if node.op == "get_attr":
            return self._fresh(_meta(node), "constant tensor of the model")
        if node.op == "output":
            self._fix_args(node.args, "network output")
            return None
        if node.op == "call_module":
            return self._call_module(node)
        target = node.target
        if node.op == "call_method":
            if target in ops.CHANNELWISE_METHODS:
                return self._channelwise(node)
            if target in ops.BINARY_METHODS:
                return self._binary(node)
            if target in ops.RESHAPE_METHODS:
                return self._reshape(node, shape_args=_method_shape_args(node))
            if target in ops.SPLIT_METHODS:
                return self._split(node)
            if target in ops.REDUCE_METHODS:
                return self._reduce(node)
            if target in ops.SHAPE_QUERY_METHODS:
                return None
            return self._unknown(node, f"unsupported tensor method .{target}()")
        if ops.is_channelwise_function(target):
            return self._channelwise(node)
        if target in ops.BINARY_FUNCTIONS:
            return self._binary(node)
        if target in ops.RESHAPE_FUNCTIONS:
            shape_args = node.args[1] if target is torch.reshape and len(node.args) > 1 else None
            return self._reshape(node, shape_args=shape_args)
        if target in ops.CONCAT_FUNCTIONS:
            return self._concat(node)
        if target in ops.SPLIT_FUNCTIONS:
            return self._split(node)
        if target in ops.REDUCE_FUNCTIONS:
            return self._reduce(node)
        if target is operator.getitem:
            return self._getitem(node)
        if target in ops.SHAPE_QUERY_FUNCTIONS:
            return None
        name = getattr(target, "__name__", str(target))
        return self._unknown(node, f"unsupported operation {name}")

    def _call_module(self, node: fx.Node) -> Any:
        module = self.gm.get_submodule(node.target)
        name = str(node.target)
        has_params = isinstance(module, ops.CONV_MODULES + ops.NORM_MODULES + ops.LINEAR_MODULES)
        if has_params and self.calls[node.target] > 1:
            return self._unknown(node, f"module {name} is called more than once")
        x = self._layout_of(node.args[0]) if node.args else None
        if isinstance(module, ops.CONV_MODULES):
            return self._conv(node, module, x)
        if isinstance(module, ops.NORM_MODULES):
            if x is None or layout_size(x) != module.num_features:
                return self._unknown(node, f"normalization {name} over a non-channel dimension")
            self.graph.norms[name] = ChannelParamRole(name, x)
            self.module_nodes[name] = node
            return x
        if isinstance(module, ops.LINEAR_MODULES):
            shape = _shape(node.args[0])
            if x is None or shape is None or len(shape) != 2:
                return self._unknown(node, f"Linear {name} applied to a tensor that is not 2-D")
            self.graph.linears[name] = LinearRole(name, x)
            return self._fresh(_meta(node), f"output of Linear {name}")
        if isinstance(module, ops.CHANNELWISE_MODULES):
            return self._channelwise(node)
        if isinstance(module, ops.RESHAPE_MODULES):
            return self._reshape(node, shape_args=None)
        return self._unknown(node, f"unsupported module {name} ({type(module).__name__})")

    # -- rules --------------------------------------------------------------------------------

    def _conv(self, node: fx.Node, conv: nn.Module, x: Layout | None) -> Any:
        name = str(node.target)
        if x is None or layout_size(x) != conv.in_channels:
            return self._unknown(node, f"conv {name} input has no channel layout")
        out_space = self.spaces.new(conv.out_channels)
        out: Layout = (Segment(out_space, conv.out_channels),)
        if conv.groups > 1:
            if len(x) == 1:
                # unit u of the input and of the output is the same set of whole groups
                self.spaces.coarsen(x[0].space, conv.groups)
                self.spaces.coarsen(out_space, conv.groups)
                self.spaces.union(x[0].space, out_space)
            else:
                reason = f"grouped conv {name} over concatenated channels"
                self._fix_value(x, reason)
                self.spaces.fix(out_space, reason)
        self.graph.convs[name] = ConvRole(name, x, out, conv.groups)
        self.module_nodes[name] = node
        return out

    def _channelwise(self, node: fx.Node) -> Any:
        x = self._layout_of(node.args[0]) if node.args else None
        in_shape, out_shape = _shape(node.args[0]) if node.args else None, _shape(node)
        if x is None or out_shape is None or len(out_shape) < 2 or out_shape[1] != in_shape[1]:
            return self._unknown(node, f"{_describe(node)} changes the channel dimension")
        return x

    def _binary(self, node: fx.Node) -> Any:
        out_shape = _shape(node)
        if out_shape is None or len(out_shape) < 2:
            return self._unknown(node, f"{_describe(node)} without a channel dimension")
        full: list[Layout] = []
        for arg in [*node.args, *node.kwargs.values()]:
            shape = _shape(arg)
            if shape is None:
                continue  # a Python number or a shape value
            layout = self._layout_of(arg)
            if layout is not None and len(shape) == len(out_shape) and shape[1] == out_shape[1]:
                full.append(layout)
            elif shape.numel() == 1 or (len(shape) == len(out_shape) and shape[1] == 1):
                continue  # broadcast along channels: the same value for every channel
            else:
                return self._unknown(node, f"{_describe(node)} broadcasts across channels")
        if not full:
            return self._unknown(node, f"{_describe(node)} of broadcast operands")
        return self._unify(full, f"{_describe(node)} of differently concatenated channels")

    def _reshape(self, node: fx.Node, shape_args: Any) -> Any:
        x = self._layout_of(node.args[0])
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        reason = f"{_describe(node)} mixes channels"
        if x is None or out_shape is None or len(out_shape) < 2 or out_shape[0] != in_shape[0]:
            return self._unknown(node, reason)
        if shape_args is not None:
            entries = list(shape_args) if isinstance(shape_args, (list, tuple)) else [shape_args]
            if len(entries) > 1 and isinstance(entries[1], int) and entries[1] != -1:
                return self._unknown(node, f"{_describe(node)} hard-codes the channel count")
        if out_shape[1] == in_shape[1]:
            return x
        spatial = math.prod(in_shape[2:])
        if len(out_shape) == 2 and out_shape[1] == in_shape[1] * spatial:
            return scale_layout(x, spatial)
        return self._unknown(node, reason)

    def _concat(self, node: fx.Node) -> Any:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        out_shape = _shape(node)
        layouts = [self._layout_of(t) for t in tensors]
        if out_shape is None or any(layout is None for layout in layouts):
            return self._unknown(node, "concatenation of tensors without channel layout")
        if dim % len(out_shape) == 1:
            return tuple(seg for layout in layouts for seg in layout)
        return self._unify(layouts, "concatenation of differently laid out channels")

    def _split(self, node: fx.Node) -> Any:
        x = self._layout_of(node.args[0])
        metas = _meta(node)
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if x is None or not isinstance(metas, (tuple, list)):
            return self._unknown(node, f"{_describe(node)} of a tensor without channel layout")
        ndim = len(_shape(node.args[0]))
        if dim % ndim != 1:
            return tuple(x for _ in metas)
        pieces, current = [], list(x)
        for meta in metas:
            want, piece = int(meta.shape[1]), []
            while want > 0 and current and current[0].size <= want:
                piece.append(current.pop(0))
                want -= piece[-1].size
            if want:
                return self._unknown(node, f"{_describe(node)} splits a channel group")
            pieces.append(tuple(piece))
        return tuple(pieces)

    def _reduce(self, node: fx.Node) -> Any:
        in_shape = _shape(node.args[0])
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        x = self._layout_of(node.args[0])
        if x is None or dims is None:
            return self._unknown(node, f"{_describe(node)} over all dimensions")
        dims = [d % len(in_shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if 0 in dims or 1 in dims:
            return self._unknown(node, f"{_describe(node)} over the batch or channel dimension")
        return x

    def _getitem(self, node: fx.Node) -> Any:
        container, index = node.args
        value = self.values.get(container)
        if isinstance(value, tuple) and not _is_layout(value) and isinstance(index, int):
            return value[index]
        if _shape(container) is None and value is None:
            return None  # indexing a shape or another non-tensor value
        return self._unknown(node, "tensor indexing")

    def _find_points(self) -> None:
        for name in self.graph.convs:
            node = self.module_nodes[name]
            users = list(node.users)
            if len(users) == 1 and users[0].op == "call_module":
                user_name = str(users[0].target)
                if user_name in self.graph.norms and users[0].args[0] is node:
                    node = users[0]
            self.graph.points[name] = str(node.target)
            for user in node.users:
                module = self.gm.get_submodule(str(user.target)) if user.op == "call_module" else None
                if getattr(module, "inplace", False):
                    self.graph.inplace_modules.setdefault(name, []).append(str(user.target))
                    if len(node.users) == 1 and type(module) is nn.ReLU:
                        self.graph.relu_after_point[name] = str(user.target)


def _method_shape_args(node: fx.Node) -> Any:
    if node.target not in ("view", "reshape"):
        return None
    args = node.args[1:]
    return args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target}"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return f"operation {target}"
