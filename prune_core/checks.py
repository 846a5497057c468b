"""Argument validators shared by the public API (each raises a ValueError naming the argument), and
the one normalisation of example inputs."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def as_input_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Example inputs given as one tensor or a sequence of tensors, as a tuple of positional inputs."""
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, float))


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def one_of(label: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{label}={value!r} is not supported; use one of {', '.join(allowed)}.")


def positive_int(label: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(f"{label}={value!r} is not allowed; use a positive integer.")


def positive_int_or_auto(label: str, value: Any) -> None:
    if value != "auto" and (not is_int(value) or value < 1):
        raise ValueError(f"{label}={value!r} is not allowed; use a positive integer or 'auto'.")


def positive_number(label: str, value: Any) -> None:
    if not is_number(value) or not value > 0:
        raise ValueError(f"{label}={value!r} is not allowed; use a number > 0.")


def non_negative_number(label: str, value: Any) -> None:
    if not is_number(value) or value < 0:
        raise ValueError(f"{label}={value!r} is not allowed; use a number >= 0.")


def fraction(label: str, value: Any) -> None:
    """A share in (0, 1]."""
    if not is_number(value) or not 0 < value <= 1:
        raise ValueError(f"{label}={value!r} is not allowed; use a number in (0, 1].")


def fraction_below_one(label: str, value: Any) -> None:
    """A share in [0, 1)."""
    if not is_number(value) or not 0 <= value < 1:
        raise ValueError(f"{label}={value!r} is not allowed; use a number in [0, 1).")


def non_negative_int(label: str, value: Any) -> None:
    if not is_int(value) or value < 0:
        raise ValueError(f"{label}={value!r} is not allowed; use an integer >= 0.")


def boolean(label: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{label}={value!r} is not allowed; use true or false.")


def writable_folder(key: str, folder: Path) -> None:
    """ValueError unless ``folder`` exists and a file can be created in it (probed, then removed)."""
    if not folder.is_dir():
        raise ValueError(f"{key}={str(folder)!r} is not an existing folder; create it first.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{key}={str(folder)!r} is not writable ({err.strerror}); choose a writable folder.") from None
