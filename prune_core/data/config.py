"""The ``data`` config group, validated: every key ``build_data`` reads, checked before any work.

Bad config raises ``ValueError`` naming the key (``data.<key>``), the value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune_core.checks import is_int, is_number
from prune_core.data.bundle import AUGMENTATIONS
from prune_core.data.errors import bad_value
from prune_core.data.torchvision_sets import TORCHVISION

DATASETS: tuple[str, ...] = ("digits", "mnist1d", "cifar10", "mnist", "fashion_mnist", "imagefolder")
IMAGE_DATASETS = (*TORCHVISION, "imagefolder")
DEFAULT_CACHE_DIR = "~/.cache/taylor-prune"


@dataclass(frozen=True)
class DataOptions:
    """The validated config."""

    name: str
    root: Path | None
    val_root: Path | None
    download: bool
    val_fraction: float | None
    split_seed: int
    max_train_samples: int | None
    max_val_samples: int | None
    num_samples: int
    mnist1d_seed: int
    image_size: int | None
    grayscale_to_rgb: bool
    augment: str
    cache_dir: Path


def _optional_positive_int(cfg: Mapping[str, Any], key: str) -> int | None:
    value = cfg.get(key)
    if value is not None and not (is_int(value) and value > 0):
        raise bad_value(key, value, "use a positive integer, or null for no limit")
    return value


def _int(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not is_int(value):
        raise bad_value(key, value, "use an integer")
    return value


def _augment(cfg: Mapping[str, Any], name: str) -> str:
    augment = cfg.get("augment", "none")
    if augment not in AUGMENTATIONS:
        raise bad_value("augment", augment, f"use one of {', '.join(AUGMENTATIONS)}")
    if augment != "none" and name not in IMAGE_DATASETS:
        raise bad_value("augment", augment, f"data.name={name!r} is not images; use none, or an image data set")
    return augment


def folder_path(value: Any) -> Path | None:
    return None if value is None else Path(os.path.expanduser(str(value))).absolute()


def parse_data_config(cfg: Mapping[str, Any]) -> DataOptions:
    """Check every key that ``build_data`` reads and fill in defaults."""
    name = cfg.get("name")
    if name not in DATASETS:
        raise bad_value("name", name, f"use one of {', '.join(DATASETS)}")
    val_fraction = cfg.get("val_fraction")
    if val_fraction is not None and not (is_number(val_fraction) and 0 < val_fraction < 1):
        raise bad_value(
            "val_fraction", val_fraction, "use a number strictly between 0 and 1, or null for the test split"
        )
    num_samples = cfg.get("num_samples", 5000)
    if not (is_int(num_samples) and num_samples >= 10):
        raise bad_value("num_samples", num_samples, "use an integer >= 10 (the number of MNIST-1D samples to generate)")
    image_size = _optional_positive_int(cfg, "image_size")
    opts = DataOptions(
        name=name,
        root=folder_path(cfg.get("root")),
        val_root=folder_path(cfg.get("val_root")),
        download=bool(cfg.get("download", False)),
        val_fraction=None if val_fraction is None else float(val_fraction),
        split_seed=_int(cfg, "split_seed", 0),
        max_train_samples=_optional_positive_int(cfg, "max_train_samples"),
        max_val_samples=_optional_positive_int(cfg, "max_val_samples"),
        num_samples=num_samples,
        mnist1d_seed=_int(cfg, "mnist1d_seed", 42),
        image_size=image_size,
        grayscale_to_rgb=bool(cfg.get("grayscale_to_rgb", False)),
        augment=_augment(cfg, name),
        cache_dir=folder_path(cfg.get("cache_dir") or DEFAULT_CACHE_DIR),
    )
    if name in TORCHVISION or name == "imagefolder":
        _check_root(opts)
    return opts


def _check_root(opts: DataOptions) -> None:
    """Check ``root`` (and for ``imagefolder`` how the validation set is chosen) for folder-backed data sets."""
    if opts.root is None:
        raise bad_value("root", None, f"data.name={opts.name!r} reads its files from a folder; set data.root to it")
    if not opts.root.is_dir() and not (opts.download and opts.name in TORCHVISION):
        hint = "set data.download=true to download it there, or " if opts.name in TORCHVISION else ""
        raise bad_value("root", str(opts.root), f"no such folder; {hint}point data.root at an existing folder")
    if opts.name != "imagefolder":
        return
    if opts.val_fraction is None and opts.val_root is None:
        raise bad_value(
            "val_fraction",
            None,
            "imagefolder has no official test split; set data.val_fraction to a number in (0, 1) or data.val_root "
            "to a folder of class sub-folders",
        )
    if opts.val_fraction is not None and opts.val_root is not None:
        raise bad_value(
            "val_root",
            str(opts.val_root),
            f"data.val_fraction={opts.val_fraction} already splits the validation set off data.root; "
            "set one of data.val_fraction and data.val_root to null",
        )
