"""Results of shape-only (meta) operations, remembered by what they were given.

A network repeats its blocks: one operation on inputs of the same shapes recurs tens of times in a
trace. On meta tensors an operation costs a fraction of a millisecond of Python, so the tracer
computes each distinct one once and answers the repeats with a fresh tensor of the same shape,
strides and dtype. Only operations whose result follows from those of their inputs are remembered:
no module calls (their attributes matter), no in-place operations (they change their input), and no
arguments other than meta tensors and plain values.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable
from typing import Any

import torch

_PLAIN = (type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.layout, torch.memory_format)
_REMEMBERED_KINDS = ("call_function", "call_method")


class _Unkeyable(Exception):
    """A value the result may depend on in a way its key would not capture."""


def remembered(
    results: dict[Hashable, Any], kind: str, target: Any, values: tuple[tuple, dict], compute: Callable[[], Any]
) -> Any:
    """``compute()``, or a fresh copy of what it gave for the same ``kind``, ``target`` and argument
    ``values`` (shapes of meta tensors, plain values) earlier in ``results``."""
    key = _key(kind, target, values)
    if key is None:
        return compute()
    if key in results:
        return _fresh(results[key])
    value = compute()
    if value is not None and _storable(value):
        results[key] = _fresh(value)  # a copy: a later in-place change of ``value`` does not reach it
    return value


def _key(kind: str, target: Any, values: tuple[tuple, dict]) -> Hashable | None:
    if kind not in _REMEMBERED_KINDS or _in_place(target, values[1]):
        return None
    try:
        return kind, target, _value_key(values)
    except _Unkeyable:
        return None


def _in_place(target: Any, kwargs: dict) -> bool:
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    trailing = name.endswith("_") and not name.endswith("__")  # add_, unsqueeze_; not __getitem__
    return trailing or target in (operator.setitem, "__setitem__") or kwargs.get("inplace") is True


def _value_key(value: Any) -> Hashable:
    if isinstance(value, torch.Tensor):
        if not value.is_meta:
            raise _Unkeyable
        return "tensor", tuple(value.shape), value.stride(), value.storage_offset(), value.dtype
    if isinstance(value, (tuple, list)):
        return type(value).__name__, tuple(_value_key(item) for item in value)
    if isinstance(value, dict):
        return "dict", tuple((key, _value_key(item)) for key, item in value.items())
    if isinstance(value, slice):
        return "slice", _value_key(value.start), _value_key(value.stop), _value_key(value.step)
    if value is Ellipsis or isinstance(value, _PLAIN):
        return type(value).__name__, value
    raise _Unkeyable


def _storable(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_meta and type(value) is torch.Tensor and value.storage_offset() == 0
    if type(value) in (tuple, list, torch.Size):
        return all(_storable(item) for item in value)
    return isinstance(value, (bool, int, float))


def _fresh(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if type(value) in (tuple, list):
        return type(value)(_fresh(item) for item in value)
    return value
