"""Trace a model with torch.fx and find which filters and units can be pruned together, exactly.

The analysis (:mod:`prune_core.channel_analysis`) walks the traced graph once, giving every
tensor a channel layout per dimension (:mod:`prune_core.values`). Known operations move, merge,
concatenate or split layouts; an operation the analysis does not understand marks the channels
it touches non-prunable, so the engine never produces a network that computes something else.
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from prune_core import tracing
from prune_core.channel_analysis import ChannelAnalysis
from prune_core.graph_roles import ChannelGraph, LayerRole, MaskedNormRole, NormRole
from prune_core.module_state import preserved_state
from prune_core.shapes import propagate_shapes

__all__ = ["ChannelGraph", "LayerRole", "MaskedNormRole", "NormRole", "trace_channels"]


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
        costly_forward = propagate_shapes(gm, example_inputs)
    graph = _analyse(gm, model, untraceable)
    graph.kept_whole, graph.costly_forward = untraceable, costly_forward
    return graph


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
