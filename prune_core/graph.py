"""Trace a model with torch.fx and find which filters and units can be pruned together, exactly.

The analysis (:mod:`prune_core.channel_analysis`) walks the traced graph once, giving every
tensor a channel layout per dimension (:mod:`prune_core.values`). Known operations move, merge,
concatenate or split layouts; an operation the analysis does not understand marks the channels
it touches non-prunable, so the engine never produces a network that computes something else.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from prune_core import tracing
from prune_core.channel_analysis import ChannelAnalysis
from prune_core.graph_roles import ChannelGraph, LayerRole, MaskedNormRole, NormRole

__all__ = ["ChannelGraph", "LayerRole", "MaskedNormRole", "NormRole", "preserved_state", "trace_channels"]


_TENSOR_SLOTS = ("_parameters", "_buffers")


@contextlib.contextmanager
def preserved_state(model: nn.Module, pristine: nn.Module | None = None) -> Iterator[None]:
    """Run a block on ``model`` and put back every parameter, buffer and training flag it changed:
    the same tensor objects, with their values.

    fx records the forward of a norm subclass defined outside ``torch.nn`` (timm's
    ``BatchNormAct2d``) as ``F.batch_norm(..., training=True)``: running the traced graph would
    update the running statistics even in eval mode. The values are read back from ``pristine``, an
    unchanged model of which ``model`` is a copy; without it they are cloned first.
    """
    slots = [(m.__dict__[kind], dict(m.__dict__[kind])) for m in model.modules() for kind in _TENSOR_SLOTS]
    tensors = {id(t): t for _, saved in slots for t in saved.values() if t is not None}
    originals = _originals(model, tensors, pristine)
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for current, saved in slots:  # a forward may replace a tensor (a cache rebuilt at a new shape)
            current.clear()
            current.update(saved)
        with torch.no_grad():
            for key, tensor in tensors.items():
                tensor.copy_(originals[key])
        for module, training in modes.items():
            module.training = training


def _originals(
    model: nn.Module, tensors: dict[int, torch.Tensor], pristine: nn.Module | None
) -> dict[int, torch.Tensor]:
    """The values to restore, by tensor id: the same-named tensors of ``pristine``, else clones."""
    source = dict(_named_tensors(pristine)) if pristine is not None else {}
    names = {id(t): name for name, t in _named_tensors(model)}
    return {
        key: source[names[key]].detach() if names.get(key) in source else t.detach().clone()
        for key, t in tensors.items()
    }


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]


def trace_channels(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], pristine: nn.Module | None = None
) -> ChannelGraph:
    """Trace ``model`` in training mode (so that training-only branches such as auxiliary heads are
    part of the analysis), run it on ``example_inputs`` for the shapes, and analyse its channel
    dependencies. ``model`` is left as it was (see :func:`preserved_state` for ``pristine``)."""
    with preserved_state(model, pristine):
        model.train()
        with torch.random.fork_rng(devices=_cuda_devices(example_inputs)):  # tracing may run dropout
            gm, untraceable = tracing.trace(model, example_inputs)
        model.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    return _analyse(gm, model, untraceable)


_MAX_PASSES = 3


def _analyse(gm: fx.GraphModule, model: nn.Module, untraceable: dict[str, str]) -> ChannelGraph:
    """The channel analysis, run again while splits ask for layers' units to be cut into parts."""
    parts: dict[str, int] = {}
    for _ in range(_MAX_PASSES):
        analysis = ChannelAnalysis(gm, model, untraceable, parts)
        graph = analysis.run()
        wanted = {name: math.lcm(parts.get(name, 1), n) for name, n in analysis.wanted_parts().items()}
        if all(parts.get(name) == n for name, n in wanted.items()):
            break
        parts |= wanted
    return graph


def _cuda_devices(tensors: tuple[torch.Tensor, ...]) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})
