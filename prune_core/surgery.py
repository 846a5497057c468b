"""Physically remove pruned channels: slice weights and update layer attributes.

The same plan serves :func:`count_learnables` (sizes only) and :func:`extract` (new tensors), so
the learnables reported while pruning always equal those of the extracted network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prune_core.graph import ChannelGraph
from prune_core.spaces import Layout, element_mask

UnitMasks = dict[int, torch.Tensor]
# (module name, tensor attribute, dimension, layout that indexes that dimension)
PlanEntry = tuple[str, str, int, Layout]

_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def resize_plan(graph: ChannelGraph) -> list[PlanEntry]:
    """Every (module, tensor, dim) whose size follows a channel layout."""
    plan: list[PlanEntry] = []
    for role in graph.convs.values():
        plan += [(role.name, "weight", 0, role.out_layout), (role.name, "bias", 0, role.out_layout)]
        if role.groups == 1:
            plan.append((role.name, "weight", 1, role.in_layout))
    for role in graph.norms.values():
        plan += [(role.name, attr, 0, role.layout) for attr in _NORM_TENSORS]
    for role in graph.linears.values():
        plan.append((role.name, "weight", 1, role.in_layout))
    return plan


def kept_indices(layout: Layout, graph: ChannelGraph, unit_masks: UnitMasks) -> torch.Tensor:
    return torch.nonzero(element_mask(layout, graph.spaces, unit_masks)).flatten()


def count_learnables(model: nn.Module, graph: ChannelGraph, unit_masks: UnitMasks) -> int:
    """Learnable parameters ``model`` would have after :func:`extract` with these masks."""
    shapes = {name: list(p.shape) for name, p in model.named_parameters()}
    for module, attr, dim, layout in resize_plan(graph):
        key = f"{module}.{attr}" if module else attr
        if key in shapes:
            shapes[key][dim] = int(element_mask(layout, graph.spaces, unit_masks).sum())
    return sum(math.prod(shape) for shape in shapes.values())


TensorSlices = dict[str, list[tuple[int, torch.Tensor]]]


def kept_slices(graph: ChannelGraph, unit_masks: UnitMasks) -> TensorSlices:
    """``(dim, kept indices)`` of every tensor :func:`extract` resizes, keyed ``"module.attr"``."""
    slices: TensorSlices = {}
    for name, attr, dim, layout in resize_plan(graph):
        key = f"{name}.{attr}" if name else attr
        slices.setdefault(key, []).append((dim, kept_indices(layout, graph, unit_masks)))
    return slices


def select_kept(tensor: torch.Tensor, slices: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """``tensor`` with only the kept indices along each sliced dim (``tensor`` itself when all are kept)."""
    for dim, index in slices:
        if index.numel() != tensor.shape[dim]:
            tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor


def extract(model: nn.Module, graph: ChannelGraph, unit_masks: UnitMasks) -> None:
    """Slice ``model`` in place so that only kept channels remain."""
    for key, slices in kept_slices(graph, unit_masks).items():
        name, _, attr = key.rpartition(".")
        module = model.get_submodule(name)
        tensor = getattr(module, attr, None)
        if tensor is None:
            continue
        sliced = select_kept(tensor.detach(), slices)
        if sliced.shape == tensor.shape:
            continue
        if isinstance(tensor, nn.Parameter):
            setattr(module, attr, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
        else:
            setattr(module, attr, sliced)
    for role in graph.convs.values():
        conv = model.get_submodule(role.name)
        kept_out = len(kept_indices(role.out_layout, graph, unit_masks))
        if role.groups > 1:
            conv.groups = role.groups * kept_out // conv.out_channels
        conv.in_channels = len(kept_indices(role.in_layout, graph, unit_masks))
        conv.out_channels = kept_out
    for role in graph.norms.values():
        model.get_submodule(role.name).num_features = len(kept_indices(role.layout, graph, unit_masks))
    for role in graph.linears.values():
        model.get_submodule(role.name).in_features = len(kept_indices(role.in_layout, graph, unit_masks))
