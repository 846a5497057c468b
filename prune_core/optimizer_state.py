"""Optimizer state by parameter name, and carried across a compaction to the kept channels."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prune_core.options import TrainingOptions
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.surgery import select_kept
from prune_core.train import make_optimizer

NamedState = dict[str, dict[str, Any]]


def state_by_name(optimizer: torch.optim.Optimizer, module: nn.Module) -> NamedState:
    """The per-parameter state of ``optimizer`` (momentum, Adam moments, step), keyed by the
    parameter's name in ``module``; parameters without state are left out."""
    return {name: dict(optimizer.state[p]) for name, p in module.named_parameters() if optimizer.state.get(p)}


def load_state_by_name(optimizer: torch.optim.Optimizer, module: nn.Module, states: NamedState) -> None:
    """Give ``module``'s parameters the state of :func:`state_by_name` (moved to each parameter's device)."""
    for name, param in module.named_parameters():
        if name in states:
            optimizer.state[param] = {
                key: value.to(param.device) if torch.is_tensor(value) and value.dim() else value
                for key, value in states[name].items()
            }


def carried_optimizer(
    optimizer: torch.optim.Optimizer,
    old: TaylorPrunableNetwork,
    new: TaylorPrunableNetwork,
    options: TrainingOptions,
) -> torch.optim.Optimizer:
    """A new optimizer over ``new``, a :meth:`~TaylorPrunableNetwork.compacted` copy of ``old``,
    whose state is ``optimizer``'s state of ``old`` with the pruned channels cut out.

    State tensors shaped like their parameter are sliced as :meth:`~TaylorPrunableNetwork.to_module`
    slices the parameter; other entries (Adam's step count) are copied.
    """
    shapes = {name: p.shape for name, p in old.named_parameters()}
    slices = old.kept_slices()
    carried = {
        name: {key: _sliced(value, shapes[name], slices.get(name, [])) for key, value in state.items()}
        for name, state in state_by_name(optimizer, old).items()
    }
    fresh = make_optimizer(new.parameters(), options)
    load_state_by_name(fresh, new, carried)
    return fresh


def _sliced(value: Any, shape: torch.Size, slices: list[tuple[int, torch.Tensor]]) -> Any:
    if not torch.is_tensor(value):
        return value
    if value.shape != shape:
        return value.clone()
    return select_kept(value, slices).clone()
