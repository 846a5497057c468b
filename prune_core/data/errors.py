"""The one form of a bad ``data`` config value's error."""

from __future__ import annotations

from typing import Any


def bad_value(key: str, value: Any, allowed: str) -> ValueError:
    """``data.<key>=<value> is not allowed: <allowed>.``"""
    return ValueError(f"data.{key}={value!r} is not allowed: {allowed}.")
