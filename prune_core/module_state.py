"""A model's state, kept safe while the analysis runs it: put back afterwards, or swapped for meta
tensors so that a run computes shapes only.

Analysing a model runs it several times (tracing with example shapes, shape propagation, the
in-place capture pass). None of these runs may change what the user's network computes, and the
ones that only need shapes need not pay for the arithmetic: on the ``meta`` device, a convolution
over a 224 x 224 image costs what a tiny one does.
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

_TENSOR_SLOTS = ("_parameters", "_buffers")
_SLOTS = (*_TENSOR_SLOTS, "_modules")


SavedAttributes = list[tuple[nn.Module, dict[str, Any], list[tuple[dict, dict]]]]


def saved_attributes(model: nn.Module) -> SavedAttributes:
    """Every attribute of every module of ``model``, and the entries of those that are dicts (its
    parameters, buffers and submodules, and caches a forward fills), as they are."""
    saved = []
    for module in model.modules():
        attributes = dict(vars(module))
        entries = [(value, dict(value)) for value in attributes.values() if isinstance(value, dict)]
        saved.append((module, attributes, entries))
    return saved


def put_back(saved: SavedAttributes) -> None:
    """Make the modules' attributes what :func:`saved_attributes` saved: the same objects, the dicts
    among them with their entries as they were."""
    for module, attributes, entries in saved:
        vars(module).clear()
        vars(module).update(attributes)
        for value, kept in entries:
            value.clear()
            value.update(kept)


@contextlib.contextmanager
def attributes_kept(model: nn.Module) -> Iterator[None]:
    """Put back every attribute of every module of ``model``, and the entries of those that are dicts
    (parameters, buffers, submodules, caches): what a run caches on a module goes."""
    saved = saved_attributes(model)
    try:
        yield
    finally:
        put_back(saved)


@contextlib.contextmanager
def preserved_state(model: nn.Module, pristine: nn.Module | None = None) -> Iterator[None]:
    """Run a block on ``model`` and put back what it changed: every attribute (see
    :func:`attributes_kept`, training flags included) and the values of every parameter and buffer,
    in the same tensor objects.

    fx records the forward of a norm subclass defined outside ``torch.nn`` (timm's
    ``BatchNormAct2d``) as ``F.batch_norm(..., training=True)``: running the traced graph would
    update the running statistics even in eval mode. The values are read back from ``pristine``, an
    unchanged model of which ``model`` is a copy; without it they are cloned first.
    """
    tensors = {id(t): t for _, t in named_tensors(model)}
    originals = _originals(model, tensors, pristine)
    with attributes_kept(model):
        try:
            yield
        finally:
            with torch.no_grad():
                for key, tensor in tensors.items():
                    tensor.copy_(originals[key])


def _originals(
    model: nn.Module, tensors: dict[int, torch.Tensor], pristine: nn.Module | None
) -> dict[int, torch.Tensor]:
    """The values to restore, by tensor id: the same-named tensors of ``pristine``, else clones."""
    source = dict(named_tensors(pristine)) if pristine is not None else {}
    names = {id(t): name for name, t in named_tensors(model)}
    return {
        key: source[names[key]].detach() if names.get(key) in source else t.detach().clone()
        for key, t in tensors.items()
    }


def named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of ``model`` by name, shared ones under each of their names."""
    return [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]


@contextlib.contextmanager
def on_meta(model: nn.Module) -> Iterator[None]:
    """Inside, every parameter and buffer of ``model`` is a meta tensor of the same shape, dtype,
    strides and type (tied tensors stay tied); on leaving, each is put back where the block left
    its meta copy (an entry the block replaced is the caller's to restore, see
    :func:`attributes_kept`).

    A run on meta tensors computes shapes and never reads a value: code that depends on values
    (``.item()``, control flow on a tensor) raises, and so do operations that mix in a real tensor
    (one a module keeps outside its parameters and buffers). Callers then run on real tensors.
    """
    copies: dict[int, torch.Tensor] = {}
    swapped = []
    for module in model.modules():
        for kind in _TENSOR_SLOTS:
            entries = vars(module)[kind]
            for key, tensor in entries.items():
                if tensor is not None:
                    if id(tensor) not in copies:
                        copies[id(tensor)] = _meta_like(tensor)
                    swapped.append((entries, key, tensor, copies[id(tensor)]))
    for entries, key, _, meta in swapped:
        entries[key] = meta
    try:
        yield
    finally:
        for entries, key, tensor, meta in swapped:
            if entries.get(key) is meta:
                entries[key] = tensor


def to_meta(value: Any) -> Any:
    """``value`` (tensors inside tuples, lists and dicts) with every tensor as a meta tensor."""
    return tree_map(lambda v: _meta_like(v) if isinstance(v, torch.Tensor) else v, value)


def _meta_like(tensor: torch.Tensor) -> torch.Tensor:
    meta = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(meta, requires_grad=tensor.requires_grad)
    return meta.requires_grad_(tensor.requires_grad)


def copied(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also where a module caches a tensor computed from its parameters
    (timm's attention-bias caches, filled by an eval-mode forward with gradients on): deepcopy
    refuses such a non-leaf tensor, so the copy holds it detached. ``model`` is not changed."""
    memo: dict[int, Any] = {}

    def detach(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
        elif isinstance(value, (list, tuple)):
            for item in value:
                detach(item)
        elif isinstance(value, dict):
            for item in value.values():
                detach(item)

    for module in model.modules():
        for key, value in vars(module).items():
            if key not in _SLOTS:
                detach(value)
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (if it was on). Analysing a large model
    makes hundreds of thousands of objects (its copy, the traced graphs) and few cycles; the
    collector's repeated full passes over them cost a tenth of the analysis."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
