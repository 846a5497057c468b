"""Trace a model with torch.fx and find which filters and units can be pruned together, exactly.

The analysis (:mod:`prune_core.channel_analysis`) walks the traced graph once, giving every
tensor a channel layout per dimension (:mod:`prune_core.values`). Known operations move, merge,
concatenate or split layouts; an operation the analysis does not understand marks the channels
it touches non-prunable, so the engine never produces a network that computes something else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from prune_core import ops
from prune_core.channel_analysis import ChannelAnalysis
from prune_core.graph_roles import ChannelGraph, LayerRole, MaskedNormRole, NormRole

__all__ = ["ChannelGraph", "LayerRole", "MaskedNormRole", "NormRole", "preserved_state", "trace_channels"]


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run a block on ``model`` and put back every parameter, buffer and training flag it changed.

    fx records the forward of a norm subclass defined outside ``torch.nn`` (timm's
    ``BatchNormAct2d``) as ``F.batch_norm(..., training=True)``: running the traced graph would
    update the running statistics even in eval mode.
    """
    tensors = {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        current = dict([*model.named_parameters(), *model.named_buffers()])
        with torch.no_grad():
            for name, saved in tensors.items():
                current[name].copy_(saved)
        for module, training in modes.items():
            module.training = training


class _Tracer(fx.Tracer):
    """fx's tracer that keeps drop-path modules and the modules in ``opaque`` whole (call_module),
    and finds a parameter's name in a dict (fx searches all of them at every access)."""

    def __init__(self, model: nn.Module, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.tensor_names = {id(t): name for name, t in [*model.named_buffers(), *model.named_parameters()]}

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        name = self.tensor_names.get(id(attr_val)) if isinstance(attr_val, torch.Tensor) else None
        if name is not None and (isinstance(attr_val, nn.Parameter) or self.proxy_buffer_attributes):
            if name not in parameter_proxy_cache:
                parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
            return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a: Any) -> Any:
        name = self.tensor_names.get(id(a)) if isinstance(a, torch.Tensor) else None
        if name is not None:
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if qualified_name in self.opaque or ops.is_channelwise_module(module):
            return True
        return super().is_leaf_module(module, qualified_name)


def _trace(model: nn.Module) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ``model``; a submodule fx cannot trace into (Python control flow on tensor values) is
    kept whole, as an operation the analysis does not understand. Returns the graph and those modules."""
    untraceable: dict[str, str] = {}
    while True:
        tracer = _Tracer(model, set(untraceable))
        try:
            graph = tracer.trace(model)
            return fx.GraphModule(tracer.root, graph, type(model).__name__), untraceable
        except Exception as err:  # fx raises many exception types for untraceable code
            path = next(reversed(tracer.module_stack.values()))[0] if tracer.module_stack else ""
            if not path or path in untraceable:
                raise ValueError(
                    f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}). "
                    "The model's forward must be traceable: no data-dependent Python control flow."
                ) from err
            untraceable[path] = f"{type(err).__name__}: {str(err).splitlines()[0]}"


def trace_channels(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ChannelGraph:
    """Trace ``model`` in training mode (so that training-only branches such as auxiliary heads are
    part of the analysis), run it on ``example_inputs`` for the shapes, and analyse its channel
    dependencies. ``model`` is left as it was."""
    with preserved_state(model):
        model.train()
        gm, untraceable = _trace(model)
        model.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    return ChannelAnalysis(gm, model, untraceable).run()
