"""Physically remove pruned channels: slice weights and update layer attributes.

The same plan serves :func:`count_learnables` (sizes only) and :func:`extract` (new tensors), so
the learnables reported while pruning always equal those of the extracted network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prune_core.graph_roles import ChannelGraph
from prune_core.spaces import Layout, element_mask

UnitMasks = dict[int, torch.Tensor]
# (module name, tensor attribute, dimension, layout that indexes that dimension)
PlanEntry = tuple[str, str, int, Layout]

_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def resize_plan(graph: ChannelGraph) -> list[PlanEntry]:
    """Every (module, tensor, dim) whose size follows a channel layout."""
    plan: list[PlanEntry] = []
    for role in graph.layers.values():
        if role.functional:
            continue  # its weights are in graph.bound
        plan += [(role.name, "weight", 0, role.out_layout), (role.name, "bias", 0, role.out_layout)]
        if role.groups == 1:
            plan.append((role.name, "weight", 1, role.in_layout))
    for role in graph.norms.values():
        if role.module_level:
            plan += [(role.name, attr, 0, role.layout) for attr in _NORM_TENSORS]
    for key, dims in graph.bound.items():
        module, _, attr = key.rpartition(".")
        plan += [(module, attr, dim, layout) for dim, layout in dims.items()]
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
    _update_sizes(model, graph, unit_masks)


def _update_sizes(model: nn.Module, graph: ChannelGraph, unit_masks: UnitMasks) -> None:
    """Set the channel-count attributes of every resized layer and norm (their forwards read them)."""

    def kept(layout: Layout) -> int:
        return int(element_mask(layout, graph.spaces, unit_masks).sum())

    for role in graph.layers.values():
        layer = model.get_submodule(role.name)
        kept_in, kept_out = kept(role.in_layout), kept(role.out_layout)
        if role.kind == "linear":
            layer.in_features, layer.out_features = kept_in, kept_out
            continue
        if role.groups > 1:
            layer.groups = role.groups * kept_out // layer.out_channels
        layer.in_channels, layer.out_channels = kept_in, kept_out
    for role in graph.norms.values():
        norm, channels = model.get_submodule(role.name), kept(role.layout)
        if isinstance(norm, nn.LayerNorm):
            norm.normalized_shape = (channels,)
        elif isinstance(norm, nn.GroupNorm):
            norm.num_groups = norm.num_groups * channels // norm.num_channels
            norm.num_channels = channels
        elif isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.num_features = channels
