"""The channel analysis: an abstract interpretation of a traced graph over channel layouts.

Layers are recognised in module form (``nn.Conv2d``, ``nn.Linear``, the norms) and in functional
form applied to a module's own parameters, which is how fx records subclasses defined outside
``torch.nn`` (timm's ``BatchNormAct2d``, ``Linear``, ``LayerNorm2d``). Layer rules live here; the
rules that only move layouts are in :mod:`prune_core.tensor_rules` and :mod:`prune_core.shape_rules`.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from typing import Any

import torch
from torch import fx, nn

from prune_core import ops
from prune_core.graph_roles import ChannelGraph, LayerRole, MaskedNormRole, NormRole
from prune_core.module_scopes import ModuleScopes
from prune_core.shape_rules import ShapeRules
from prune_core.spaces import Layout, Segment, SpaceSet, layout_size
from prune_core.tensor_rules import describe, dim_arg, meta_of, shape_of
from prune_core.values import ParamView, TensorValue

_NORM_FUNCTION_KIND = {"batch_norm": "batch", "layer_norm": "layer", "group_norm": "group"}
_NORM_MODULE_OF_KIND = {"batch": nn.modules.batchnorm._BatchNorm, "layer": nn.LayerNorm, "group": nn.GroupNorm}


class ChannelAnalysis(ShapeRules):
    """Walk a traced graph once, giving every value its layouts and recording the layers."""

    def __init__(
        self,
        gm: fx.GraphModule,
        model: nn.Module,
        untraceable: dict[str, str] | None = None,
        parts: dict[str, int] | None = None,
    ) -> None:
        super().__init__(SpaceSet())
        self.gm = gm
        self.model = model
        """The traced model: fx keeps only the parameters of modules it traced into, not the modules."""
        self.untraceable = untraceable or {}
        """Modules kept whole because fx could not trace into them -> why."""
        self.parts = parts or {}
        """Layer -> the number of equal parts its units are made of (a split cuts its output)."""
        self.graph = ChannelGraph(spaces=self.spaces)
        self.scopes = ModuleScopes(gm)
        self.layer_nodes: dict[str, fx.Node] = {}
        self.pending_layer_norms: list[tuple[fx.Node, str, Layout]] = []
        self.model_tensors = {name for name, _ in [*model.named_parameters(), *model.named_buffers()]}
        self.calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")

    def run(self) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            self.values[node] = self._visit(node)
        for node, name, layout in self.pending_layer_norms:
            self._mask_layer_norm(node, name, layout)
        for key, reason in self.opaque.items():
            for layout in self.bound.pop(key, {}).values():
                self.fix_layout(layout, reason)
        self.graph.bound = self.bound
        self._find_points()
        return self.graph

    def wanted_parts(self) -> dict[str, int]:
        """Layer -> equal parts its units should be made of, so that the splits that asked for cuts
        (:meth:`request_cuts`) fall between parts. Every layer of a cut space's group is cut alike."""
        wanted: dict[str, int] = {}
        for space, parts in self.cut_requests:
            root = self.spaces.find(space)
            owners = [
                role
                for role in self.graph.layers.values()
                if any(self.spaces.find(seg.space) == root for seg in role.out_layout)
            ]
            cuts = {role.name: math.lcm(wanted.get(role.name, 1), len(role.out_layout) * parts) for role in owners}
            if owners and all(
                role.groups == 1 and not layout_size(role.out_layout) % cuts[role.name] for role in owners
            ):
                wanted.update(cuts)
        return wanted

    # -- dispatch -----------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self.fresh(meta_of(node), "network input")
        if node.op == "get_attr":
            shape, key = shape_of(node), str(node.target)
            if key not in self.model_tensors:  # a constant of the trace, not a tensor of the model
                self.opaque.setdefault(key, f"constant tensor {key} computed while tracing")
            return ParamView(key, tuple(range(len(shape)))) if shape is not None else None
        if node.op == "output":
            self.fix_args(node.args, "network output")
            return None
        if node.op == "call_module":
            return self._call_module(node)
        if node.op == "call_method":
            return self._call_method(node)
        return self._call_function(node)

    def _call_method(self, node: fx.Node) -> Any:
        target = node.target
        if target in ops.SHAPE_QUERY_METHODS:
            return self.size_query(node) if target == "size" else None
        if target in ops.CHANNELWISE_METHODS:
            return self.channelwise(node)
        if target in ops.BINARY_METHODS:
            return self.broadcast(node, list(node.args))
        if target in ops.RESHAPE_METHODS:
            return self.reshape(node, _size_args(node))
        if target in ops.PERMUTE_METHODS:
            return self.permute(node)
        if target in ops.SPLIT_METHODS:
            return self.split(node)
        if target in ops.SOFTMAX_METHODS:
            return self.softmax(node)
        if target in ops.REDUCE_METHODS:
            return self.reduce(node)
        return self.unknown(node, f"unsupported tensor method .{target}()")

    def _call_function(self, node: fx.Node) -> Any:
        target = node.target
        if target is operator.getitem:
            return self.getitem(node)
        if target in ops.SHAPE_QUERY_FUNCTIONS:
            return self.size_query(node) if target is getattr else None
        if target in ops.ASSERT_FUNCTIONS:
            return None
        if target in ops.SIZE_ARITHMETIC and not any(
            isinstance(self.value(a), TensorValue | ParamView) for a in node.args
        ):
            return self.size_arithmetic(node)
        if target in ops.CONV_FUNCTIONS:
            return self._functional_layer(node, "conv")
        if target in ops.LINEAR_FUNCTIONS:
            return self._functional_layer(node, "linear")
        if target in ops.NORM_FUNCTIONS:
            return self._functional_norm(node)
        if ops.is_channelwise_function(target):
            return self.channelwise(node)
        if target in ops.BINARY_FUNCTIONS:
            return self.broadcast(node, [*node.args, *node.kwargs.values()])
        if target in ops.RESHAPE_FUNCTIONS:
            return self.reshape(node, _size_args(node))
        if target in ops.PERMUTE_FUNCTIONS:
            return self.permute(node)
        if target in ops.CONCAT_FUNCTIONS:
            return self.concat(node)
        if target in ops.STACK_FUNCTIONS:
            return self.stack(node)
        if target in ops.SPLIT_FUNCTIONS:
            return self.split(node)
        if target in ops.SOFTMAX_FUNCTIONS:
            return self.softmax(node)
        if target in ops.REDUCE_FUNCTIONS:
            return self.reduce(node)
        return self.unknown(node, f"unsupported operation {getattr(target, '__name__', str(target))}")

    def _call_module(self, node: fx.Node) -> Any:
        module = self.model.get_submodule(node.target)
        name = str(node.target)
        if name in self.untraceable:
            return self.unknown(node, f"module {name} could not be traced ({self.untraceable[name]})")
        if isinstance(module, ops.CONV_MODULES + ops.NORM_MODULES + ops.LINEAR_MODULES) and self.calls[node.target] > 1:
            return self.unknown(node, f"module {name} is called more than once")
        x = self.tensor(node.args[0]) if node.args else None
        if isinstance(module, ops.CONV_MODULES):
            return self._layer(node, name, "conv", module, x, functional=False)
        if isinstance(module, ops.LINEAR_MODULES):
            return self._layer(node, name, "linear", module, x, functional=False)
        if isinstance(module, ops.NORM_MODULES):
            return self._norm(node, name, _norm_kind(module), x, module, module_level=True)
        if ops.is_channelwise_module(module):
            return self.channelwise(node)
        if isinstance(module, ops.FLATTEN_MODULES):
            return self.reshape(node, [])
        return self.unknown(node, f"unsupported module {name} ({type(module).__name__})")

    # -- layers -------------------------------------------------------------------------------

    def _layer(
        self, node: fx.Node, name: str, kind: str, module: nn.Module, x: TensorValue | None, functional: bool
    ) -> Any:
        """A conv (channels on dim 1) or Linear (channels on the last dim): a producer of units."""
        in_shape = shape_of(node.args[0])
        if x is None or in_shape is None:
            return self.unknown(node, f"{kind} {name} input has no channel layout")
        channel_dim = 1 if kind == "conv" else len(in_shape) - 1
        width = module.in_channels if kind == "conv" else module.in_features
        in_layout = x.dims[channel_dim] or (
            Segment(self.spaces.new(width, f"{name} reads a non-channel dimension"), width),
        )
        if layout_size(in_layout) != width:
            return self.unknown(node, f"{kind} {name} input has no channel layout")
        if kind == "conv":  # a Linear treats every other position on its own; a conv mixes them
            for layout in x.dims[2:]:
                self.fix_layout(layout, f"conv {name} mixes positions along channels")
        out_units = module.out_channels if kind == "conv" else module.out_features
        groups = getattr(module, "groups", 1)
        parts = self.parts.get(name, 1) if groups == 1 else 1
        out: Layout = tuple(Segment(self.spaces.new(out_units // parts), out_units // parts) for _ in range(parts))
        out_space = out[0].space
        if groups > 1:
            if len(in_layout) == 1:
                # unit u of the input and of the output is the same set of whole groups
                self.spaces.coarsen(in_layout[0].space, groups)
                self.spaces.coarsen(out_space, groups)
                self.spaces.union(in_layout[0].space, out_space)
            else:
                reason = f"grouped conv {name} over concatenated channels"
                self.fix_layout(in_layout, reason)
                self.spaces.fix(out_space, reason)
        self.graph.layers[name] = LayerRole(name, kind, in_layout, out, groups, functional)
        self.layer_nodes[name] = node
        dims = list(x.dims)
        dims[channel_dim] = out
        if kind == "conv":
            dims = [None, out] + [None] * (len(dims) - 2)
        return TensorValue(tuple(dims))

    def _functional_layer(self, node: fx.Node, kind: str) -> Any:
        """``F.conv2d`` / ``F.linear`` on a module's own weight, as a conv or Linear subclass records it."""
        weight = self.value(dim_arg(node, 1, "weight"))
        bias = self.value(dim_arg(node, 2, "bias"))
        module_name = weight.key.rpartition(".")[0] if isinstance(weight, ParamView) else None
        module = self.model.get_submodule(module_name) if module_name is not None else None
        expected = ops.CONV_MODULES if kind == "conv" else ops.LINEAR_MODULES
        if not (
            isinstance(weight, ParamView)
            and weight.is_whole
            and isinstance(module, expected)
            and weight.key == f"{module_name}.weight"
            and self.scopes.reads_module_input(node, module_name)
        ):
            return self.unknown(node, f"{describe(node)} with a computed weight or inside another module")
        if kind == "conv" and dim_arg(node, 6, "groups", 1) != module.groups:
            return self.unknown(node, f"{describe(node)} with groups other than {module_name}.groups")
        out = self._layer(node, module_name, kind, module, self.tensor(node.args[0]), functional=True)
        role = self.graph.layers.get(module_name)
        if role is not None:
            self.bind(weight, 0, role.out_layout)
            if role.groups == 1:
                self.bind(weight, 1, role.in_layout)
            if isinstance(bias, ParamView):
                self.bind(bias, 0, role.out_layout)
        return out

    # -- norms --------------------------------------------------------------------------------

    def _norm(self, node: fx.Node, name: str, kind: str, x: TensorValue | None, module: Any, module_level: bool) -> Any:
        """BatchNorm and GroupNorm over dim 1, LayerNorm over the last dim: per-channel parameters;
        statistics over any other laid-out dim fix it, LayerNorm's over channels are masked."""
        shape = shape_of(node.args[0])
        if x is None or shape is None or len(shape) < 2:
            return self.unknown(node, f"normalization {name} of a tensor without layout")
        normalized = _normalized_dims(node, kind, module, len(shape))
        if normalized is None:
            return self.unknown(node, f"normalization {name} over several dimensions")
        layout = x.dims[normalized]
        for d, other in enumerate(x.dims):
            if d != normalized:
                self.fix_layout(other, f"normalization {name} takes statistics across channels")
        if layout is None:
            return x
        if kind == "group":
            groups = dim_arg(node, 1, "num_groups") if not module_level else module.num_groups
            if len(layout) != 1:
                return self.unknown(node, f"group norm {name} over concatenated channels")
            self.spaces.coarsen(layout[0].space, groups)
        if kind == "layer" and module_level:
            eps = self.model.get_submodule(name).eps
            self.graph.masked_norms[name] = MaskedNormRole(name, normalized, layout, eps)
        elif kind == "layer":
            self.pending_layer_norms.append((node, name, layout))
        self.graph.norms[name] = NormRole(name, layout, kind, module_level)
        return x

    def _functional_norm(self, node: fx.Node) -> Any:
        kind = _NORM_FUNCTION_KIND[node.target.__name__]
        params = [self.value(a) for a in (*node.args[1:], *node.kwargs.values())]
        views = [v for v in params if isinstance(v, ParamView)]
        owners = {v.key.rpartition(".")[0] for v in views}
        if any(not v.is_whole for v in views) or len(owners) > 1:
            return self.unknown(node, f"{describe(node)} with computed parameters")
        name = owners.pop() if owners else self.scopes.innermost(node)
        module = self.model.get_submodule(name) if name is not None else None
        if not isinstance(module, _NORM_MODULE_OF_KIND[kind]):
            return self.unknown(node, f"{describe(node)} outside a {kind} norm module")
        out = self._norm(node, name, kind, self.tensor(node.args[0]), None, module_level=False)
        role = self.graph.norms.get(name)
        for view in views:
            if role is not None:
                self.bind(view, 0, role.layout)
            else:
                self.fix_value(view, f"{describe(node)} over a non-channel dimension")
        return out

    def _mask_layer_norm(self, node: fx.Node, name: str, layout: Layout) -> None:
        """Have a forward hook on module ``name`` recompute its layer norm over the kept channels
        while pruning is simulated; where the module does more than move dims around it, fix them."""
        boundary = self.scopes.norm_boundary(node, name)
        first, last = (self.tensor(n) for n in boundary) if boundary else (None, None)
        dims = [d for d, dim_layout in enumerate(first.dims) if dim_layout == layout] if first else []
        if (
            last is None
            or shape_of(boundary[0]) != shape_of(boundary[1])
            or len(dims) != 1
            or last.dims[dims[0]] != layout
        ):
            self.fix_layout(layout, f"layer norm {name} inside a module the engine cannot mask")
            return
        eps = dim_arg(node, 4, "eps", 1e-5)
        self.graph.masked_norms[name] = MaskedNormRole(name, dims[0], layout, eps)

    # -- pruning points -----------------------------------------------------------------------

    def _find_points(self) -> None:
        for name, role in self.graph.layers.items():
            node = self.layer_nodes[name]
            if role.functional:
                node = self.scopes.output_node(node, name)
                if node is None or not self._carries(node, role.out_layout):
                    self.fix_layout(role.out_layout, f"the output of {name} cannot be observed")
                    node = self.layer_nodes[name]
            point, point_node = self._batch_norm_after(node, role.out_layout) or (name, node)
            self.graph.points[name] = point
            value = self.tensor(point_node)
            self.graph.point_dims[name] = (
                next((d for d, layout in enumerate(value.dims) if layout == role.out_layout), 1)
                if value is not None
                else 1
            )
            self._record_inplace(name, point_node)

    def _carries(self, node: fx.Node, layout: Layout) -> bool:
        value = self.tensor(node)
        return value is not None and layout in value.dims

    def _batch_norm_after(self, node: fx.Node, layout: Layout) -> tuple[str, fx.Node] | None:
        """The BatchNorm module that alone consumes ``node`` (its output is then the pruning point)."""
        users = list(node.users)
        if len(users) != 1 or not users[0].args or users[0].args[0] is not node:
            return None
        user = users[0]
        if user.op == "call_module":
            role = self.graph.norms.get(str(user.target))
            return (str(user.target), user) if role is not None and role.kind == "batch" else None
        if user.target is not ops.F.batch_norm:
            return None
        owner = self.scopes.innermost(user)
        role = self.graph.norms.get(owner) if owner else None
        if role is None or role.kind != "batch" or not self.scopes.reads_module_input(user, owner):
            return None
        out = self.scopes.output_node(user, owner)
        return (owner, out) if out is not None and self._carries(out, layout) else None

    def _record_inplace(self, name: str, node: fx.Node) -> None:
        for user in node.users:
            module = self.model.get_submodule(str(user.target)) if user.op == "call_module" else None
            if getattr(module, "inplace", False):
                self.graph.inplace_modules.setdefault(name, []).append(str(user.target))
                if len(node.users) == 1 and type(module) is nn.ReLU:
                    self.graph.relu_after_point[name] = str(user.target)


def _norm_kind(module: nn.Module) -> str:
    return next(kind for kind, norm_type in _NORM_MODULE_OF_KIND.items() if isinstance(module, norm_type))


def _normalized_dims(node: fx.Node, kind: str, module: Any, ndim: int) -> int | None:
    """The dim whose channels a norm keeps per-channel parameters for (``None``: several dims)."""
    if kind != "layer":
        return 1
    shape = module.normalized_shape if module is not None else dim_arg(node, 1, "normalized_shape")
    return ndim - 1 if len(tuple(shape)) == 1 else None


def _size_args(node: fx.Node) -> list[Any]:
    """The size arguments of a view / reshape / expand call (``[]`` for the other reshapes)."""
    if node.target not in ("view", "reshape", "expand", torch.reshape):
        return []
    args = node.args[1:]
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return list(args)
