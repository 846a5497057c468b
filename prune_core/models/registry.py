"""Build a reference network by name: the built-in ones or any torchvision classification model."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from prune_core.models.resnet_cifar import resnet20, resnet56
from prune_core.models.small import DigitsCNN, SequenceCNN

BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "mnist1d_cnn": SequenceCNN,
    "resnet20": resnet20,
    "resnet56": resnet56,
}


WIDTH_MODELS = tuple(name for name, build in BUILTIN_MODELS.items() if "width" in inspect.signature(build).parameters)
"""Built-in models whose ``width`` (channels of the first conv; the later ones have twice as many) can be set: the
ones whose builder takes it."""


def torchvision_model_names() -> list[str]:
    """Names of torchvision's classification models."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_names() -> list[str]:
    """Every name :func:`build_model` accepts."""
    return sorted(BUILTIN_MODELS) + torchvision_model_names()


def check_model_name(label: str, name: Any) -> None:
    """ValueError naming ``label`` unless :func:`build_model` knows ``name`` (close matches suggested).

    A built-in name is accepted without importing torchvision.
    """
    if isinstance(name, str) and name in BUILTIN_MODELS:
        return
    names = model_names()
    if name in names:
        return
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"{label}={name!r} is not a known model; {hint}built-in models: {', '.join(BUILTIN_MODELS)}; or any "
        "torchvision classification model, e.g. resnet18, mobilenet_v2 (all: prune_core.models.model_names())."
    )


def default_width(name: str) -> int | None:
    """The width :func:`build_model` gives ``name`` when none is asked for (``None``: a fixed-width model)."""
    return inspect.signature(BUILTIN_MODELS[name]).parameters["width"].default if name in WIDTH_MODELS else None


def check_width(label: str, name: str, width: int | None) -> None:
    """ValueError naming ``label`` when a ``width`` is given for a model other than :data:`WIDTH_MODELS`."""
    if width is not None and name not in WIDTH_MODELS:
        raise ValueError(
            f"{label}={width!r} is set for model {name!r}, which has a fixed width; only {', '.join(WIDTH_MODELS)} "
            "take a width (leave it null for the others)."
        )


def build_model(
    name: str, num_classes: int = 10, in_channels: int | None = None, width: int | None = None
) -> nn.Module:
    """A freshly initialised network: a built-in one, or a torchvision classifier (no weights).

    ``in_channels`` applies to the built-in networks (default: their own); torchvision models
    take 3-channel images. ``width`` applies to :data:`WIDTH_MODELS` (default: their own, 32).
    """
    check_model_name("name", name)
    check_width("width", name, width)
    if name in BUILTIN_MODELS:
        sizes = {"in_channels": in_channels, "width": width}
        return BUILTIN_MODELS[name](num_classes=num_classes, **{k: v for k, v in sizes.items() if v is not None})
    if in_channels not in (None, 3):
        raise ValueError(
            f"model {name!r} (torchvision) takes 3-channel images, got in_channels={in_channels!r}; "
            "use 3-channel data or a built-in model."
        )
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
