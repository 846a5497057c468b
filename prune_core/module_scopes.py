"""Which traced nodes belong to which call of which module (fx's ``nn_module_stack``).

fx traces into modules that are not plain ``torch.nn`` layers and records, on every node, the
stack of module calls it was made in. The analysis uses it to find a module call's input and
output nodes: where a forward hook on that module sees the value the graph computes.
"""

from __future__ import annotations

import operator
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import fx

_LAYOUT_METHODS = {"permute", "transpose", "contiguous", "movedim"}
_LAYOUT_FUNCTIONS = {F.layer_norm, getattr, operator.eq, torch._assert}


def _scope_keys(node: fx.Node) -> list[str]:
    return list((node.meta.get("nn_module_stack") or {}).keys())


def _zero_padding(node: fx.Node) -> bool:
    """``F.pad`` that pads with zeros: a channel of zeros stays all zeros."""
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    return node.op == "call_function" and node.target is F.pad and bool(node.args) and not value


class ModuleScopes:
    """The module calls of a traced graph and the nodes made inside each."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.nodes: dict[str, list[fx.Node]] = defaultdict(list)
        self.paths: dict[str, str] = {}
        self.calls: dict[str, int] = defaultdict(int)
        for node in gm.graph.nodes:
            stack = node.meta.get("nn_module_stack") or {}
            for key, (path, _type) in stack.items():
                if key not in self.paths:
                    self.paths[key] = path
                    self.calls[path] += 1
                self.nodes[key].append(node)

    def _key(self, node: fx.Node, path: str) -> str | None:
        keys = [key for key in _scope_keys(node) if self.paths.get(key) == path]
        return keys[-1] if keys else None

    def innermost(self, node: fx.Node) -> str | None:
        keys = _scope_keys(node)
        return self.paths[keys[-1]] if keys else None

    def reads_module_input(self, node: fx.Node, path: str) -> bool:
        """Whether ``node`` is inside the only call of module ``path`` and reads that call's input
        as its first argument, directly or zero-padded (timm's ``Conv2dSame``): a forward pre-hook
        that zeroes channels of the module's input then zeroes them in what ``node`` reads."""
        key = self._key(node, path)
        arg = node.args[0] if node.args else None
        while isinstance(arg, fx.Node) and key in _scope_keys(arg) and _zero_padding(arg):
            arg = arg.args[0]
        return key is not None and self.calls[path] == 1 and isinstance(arg, fx.Node) and key not in _scope_keys(arg)

    def output_node(self, node: fx.Node, path: str) -> fx.Node | None:
        """The node a call of module ``path`` (the one ``node`` is in) returns, if it is one node."""
        key = self._key(node, path)
        if key is None:
            return None
        outputs = [
            n for n in self.nodes[key] if n.op != "get_attr" and any(key not in _scope_keys(user) for user in n.users)
        ]
        return outputs[0] if len(outputs) == 1 else None

    def norm_boundary(self, node: fx.Node, path: str) -> tuple[fx.Node, fx.Node] | None:
        """Input and output nodes of the call of module ``path`` that ``node`` (a layer norm) is in,
        when that call only moves dimensions around the norm: a forward hook can then recompute it."""
        key = self._key(node, path)
        if key is None:
            return None
        inside = self.nodes[key]
        for n in inside:
            if n.op == "call_method" and n.target not in _LAYOUT_METHODS:
                return None
            if n.op == "call_function" and n.target not in _LAYOUT_FUNCTIONS:
                return None
            if n.op == "call_module":
                return None
        inputs = {
            arg for n in inside for arg in n.all_input_nodes if key not in _scope_keys(arg) and arg.op != "get_attr"
        }
        output = self.output_node(node, path)
        return (inputs.pop(), output) if len(inputs) == 1 and output is not None else None
