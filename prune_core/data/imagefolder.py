"""Folders of class sub-folders of images (ImageFolder layout), decoded once and cached as uint8 tensors."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from prune_core.data.bundle import DataBundle, Pair, Stats, image_bundle
from prune_core.data.errors import bad_value
from prune_core.data.splits import split_pairs, val_count

if TYPE_CHECKING:
    from prune_core.data.config import DataOptions


def _scan(folder: Path, key: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, class index)`` samples of an ImageFolder-layout folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise bad_value(key, str(folder), "no such folder; point it at a folder of class sub-folders of images")
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise bad_value(key, str(folder), f"it needs one sub-folder of images per class ({err})") from err
    return classes, samples


def _cache_file(folder: Path, samples: Sequence[tuple[str, int]], opts: DataOptions) -> Path:
    """Where the decoded ``folder`` is cached: keyed by its path, ``image_size`` and every file's size/mtime."""
    files = []
    for path, label in samples:
        stat = os.stat(path)
        files.append((os.path.relpath(path, folder), label, stat.st_size, stat.st_mtime_ns))
    key = json.dumps([str(folder), opts.image_size, sorted(files)])
    return opts.cache_dir / f"imagefolder-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def _decode(path: str, image_size: int | None) -> torch.Tensor:
    """One image as uint8 ``(3, H, W)`` RGB, resized to ``image_size`` squared when given."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if image_size is not None:
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def decode_folder(samples: Sequence[tuple[str, int]], image_size: int | None) -> Pair:
    """Decode every sample (on a thread pool) into one uint8 tensor; all images must end up the same size."""
    first = _decode(samples[0][0], image_size)
    images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)

    def fill(i: int) -> None:
        img = _decode(samples[i][0], image_size)
        if img.shape != first.shape:
            raise bad_value(
                "image_size",
                image_size,
                f"{samples[i][0]} is {tuple(img.shape)} but {samples[0][0]} is {tuple(first.shape)} (C, H, W); "
                "set data.image_size to resize every image to one size",
            )
        images[i] = img

    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for _ in pool.map(fill, range(len(samples))):
            pass
    finally:
        pool.shutdown(cancel_futures=True)
    return images, torch.tensor([label for _, label in samples], dtype=torch.long)


def load_folder(folder: Path, classes: list[str], samples: Sequence[tuple[str, int]], opts: DataOptions) -> Pair:
    """The decoded folder, from the cache when it is there; otherwise decoded and written to the cache."""
    cache = _cache_file(folder, samples, opts)
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return blob["images"], blob["labels"]
    images, labels = decode_folder(samples, opts.image_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"images": images, "labels": labels, "classes": classes}, tmp)
    os.replace(tmp.name, cache)
    return images, labels


def _channel_stats(images: torch.Tensor) -> Stats:
    """Per-channel mean and std of uint8 images scaled to [0, 1], accumulated in chunks."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(1024):
        x = chunk.double() / 255
        total += x.sum((0, 2, 3))
        squares += x.square().sum((0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def imagefolder_bundle(opts: DataOptions) -> DataBundle:
    classes, samples = _scan(opts.root, "root")
    if opts.val_fraction is not None:
        val_count(len(samples), opts.val_fraction)
    val_scan = None if opts.val_root is None else _scan(opts.val_root, "val_root")
    if val_scan is not None and val_scan[0] != classes:
        raise bad_value(
            "val_root",
            str(opts.val_root),
            f"its classes {val_scan[0]} differ from the classes {classes} of data.root={str(opts.root)!r}",
        )
    train = load_folder(opts.root, classes, samples, opts)
    test = None if val_scan is None else load_folder(opts.val_root, *val_scan, opts)
    train, val = split_pairs(train, test, opts)
    return image_bundle(train, val, len(classes), _channel_stats(train[0]), opts.grayscale_to_rgb, opts.augment)
