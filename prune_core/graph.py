"""Trace a model with torch.fx and find which filters and units can be pruned together, exactly.

The analysis (:mod:`prune_core.channel_analysis`) walks the traced graph once, giving every
tensor a channel layout per dimension (:mod:`prune_core.values`). Known operations move, merge,
concatenate or split layouts; an operation the analysis does not understand marks the channels
it touches non-prunable, so the engine never produces a network that computes something else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

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


def trace_channels(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ChannelGraph:
    """Trace ``model`` on ``example_inputs`` and analyse its channel dependencies (``model`` unchanged)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many exception types for untraceable code
        raise ValueError(
            f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}). "
            "The model's forward must be traceable: no data-dependent Python control flow."
        ) from err
    with preserved_state(model), torch.no_grad():
        model.eval()
        ShapeProp(gm).propagate(*example_inputs)
    return ChannelAnalysis(gm, model).run()
