"""Dataset builder for sweep trials: one resolved ``data`` config group in, tensor-backed datasets out.

Every data set is held in memory: images as one uint8 tensor ``(N, C, H, W)`` served as normalised float32,
the built-in ``digits`` and ``mnist1d`` as float32 tensors. Splits and subsets are seeded, so a trial is
reproducible from its config. Bad config raises ``ValueError`` naming the key before any expensive work.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from prune_core.data import load_digits_tensors, load_mnist1d_tensors

DATASETS: tuple[str, ...] = ("digits", "mnist1d", "cifar10", "mnist", "fashion_mnist", "imagefolder")
DEFAULT_CACHE_DIR = "~/.cache/taylor-prune"

Pair = tuple[torch.Tensor, torch.Tensor]
Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class DataBundle:
    """Train and validation sets, with what a model needs to know about them."""

    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: tuple[int, ...]


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` in memory, served as ``((x / 255 - mean) / std, label)`` in float32.

    ``repeat_channels`` repeats the channels that many times after normalising (grayscale to RGB).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, stats: Stats, repeat_channels: int = 1) -> None:
        self.images, self.labels, self.repeat_channels = images, labels, repeat_channels
        self.mean = torch.tensor(stats[0], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(stats[1], dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[index].float() / 255 - self.mean) / self.std
        return x.repeat(self.repeat_channels, 1, 1), self.labels[index]


@dataclass(frozen=True)
class _Options:
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
    cache_dir: Path


@dataclass(frozen=True)
class _TorchvisionSpec:
    """How to find and normalise one torchvision data set."""

    cls_name: str
    folder: str
    stats: Stats


_TORCHVISION: dict[str, _TorchvisionSpec] = {
    "cifar10": _TorchvisionSpec("CIFAR10", "cifar-10-batches-py", ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
    "mnist": _TorchvisionSpec("MNIST", "MNIST/raw", ((0.1307,), (0.3081,))),
    "fashion_mnist": _TorchvisionSpec("FashionMNIST", "FashionMNIST/raw", ((0.2860,), (0.3530,))),
}


def build_data(cfg: Mapping[str, Any]) -> DataBundle:
    """Build the train and validation sets that ``cfg`` (a resolved ``data`` config group) describes."""
    opts = _parse(cfg)
    return _BUILDERS[opts.name](opts)


# ---------------------------------------------------------------- config validation


def _bad(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"data.{key}={value!r} is not allowed: {allowed}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_positive_int(cfg: Mapping[str, Any], key: str) -> int | None:
    value = cfg.get(key)
    if value is not None and not (_is_int(value) and value > 0):
        raise _bad(key, value, "use a positive integer, or null for no limit")
    return value


def _int(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not _is_int(value):
        raise _bad(key, value, "use an integer")
    return value


def _folder(value: Any) -> Path | None:
    return None if value is None else Path(os.path.expanduser(str(value))).absolute()


def _parse(cfg: Mapping[str, Any]) -> _Options:
    """Check every key that ``build_data`` reads and fill in defaults."""
    name = cfg.get("name")
    if name not in DATASETS:
        raise _bad("name", name, f"use one of {', '.join(DATASETS)}")
    val_fraction = cfg.get("val_fraction")
    if val_fraction is not None and not (
        isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool) and 0 < val_fraction < 1
    ):
        raise _bad("val_fraction", val_fraction, "use a number strictly between 0 and 1, or null for the test split")
    num_samples = cfg.get("num_samples", 5000)
    if not (_is_int(num_samples) and num_samples >= 10):
        raise _bad("num_samples", num_samples, "use an integer >= 10 (the number of MNIST-1D samples to generate)")
    image_size = _optional_positive_int(cfg, "image_size")
    opts = _Options(
        name=name,
        root=_folder(cfg.get("root")),
        val_root=_folder(cfg.get("val_root")),
        download=bool(cfg.get("download", False)),
        val_fraction=None if val_fraction is None else float(val_fraction),
        split_seed=_int(cfg, "split_seed", 0),
        max_train_samples=_optional_positive_int(cfg, "max_train_samples"),
        max_val_samples=_optional_positive_int(cfg, "max_val_samples"),
        num_samples=num_samples,
        mnist1d_seed=_int(cfg, "mnist1d_seed", 42),
        image_size=image_size,
        grayscale_to_rgb=bool(cfg.get("grayscale_to_rgb", False)),
        cache_dir=_folder(cfg.get("cache_dir") or DEFAULT_CACHE_DIR),
    )
    if name in _TORCHVISION or name == "imagefolder":
        _check_root(opts)
    return opts


def _check_root(opts: _Options) -> None:
    """Check ``root`` (and for ``imagefolder`` how the validation set is chosen) for folder-backed data sets."""
    if opts.root is None:
        raise _bad("root", None, f"data.name={opts.name!r} reads its files from a folder; set data.root to it")
    if not opts.root.is_dir() and not (opts.download and opts.name in _TORCHVISION):
        hint = "set data.download=true to download it there, or " if opts.name in _TORCHVISION else ""
        raise _bad("root", str(opts.root), f"no such folder; {hint}point data.root at an existing folder")
    if opts.name != "imagefolder":
        return
    if opts.val_fraction is None and opts.val_root is None:
        raise _bad(
            "val_fraction",
            None,
            "imagefolder has no official test split; set data.val_fraction to a number in (0, 1) or data.val_root "
            "to a folder of class sub-folders",
        )
    if opts.val_fraction is not None and opts.val_root is not None:
        raise _bad(
            "val_root",
            str(opts.val_root),
            f"data.val_fraction={opts.val_fraction} already splits the validation set off data.root; "
            "set one of data.val_fraction and data.val_root to null",
        )


# ---------------------------------------------------------------- splits


def _val_count(n: int, fraction: float) -> int:
    n_val = round(n * fraction)
    if not 0 < n_val < n:
        raise _bad("val_fraction", fraction, f"it leaves an empty train or validation set out of {n} samples")
    return n_val


def _take(pair: Pair, index: torch.Tensor) -> Pair:
    return pair[0][index], pair[1][index]


def _split(train: Pair, test: Pair | None, opts: _Options) -> tuple[Pair, Pair]:
    """Seeded shuffle; the validation set is ``test`` or, when it is None, ``val_fraction`` of ``train``.

    ``max_train_samples`` / ``max_val_samples`` keep the first samples after the shuffle.
    """
    gen = torch.Generator().manual_seed(opts.split_seed)
    order = torch.randperm(len(train[1]), generator=gen)
    if test is None:
        n_val = _val_count(len(order), opts.val_fraction)
        train_idx, val_idx, val_src = order[n_val:], order[:n_val], train
    else:
        train_idx, val_idx, val_src = order, torch.randperm(len(test[1]), generator=gen), test
    return _take(train, train_idx[: opts.max_train_samples]), _take(val_src, val_idx[: opts.max_val_samples])


def _image_bundle(train: Pair, val: Pair, num_classes: int, stats: Stats, opts: _Options) -> DataBundle:
    repeat = 3 if opts.grayscale_to_rgb and train[0].shape[1] == 1 else 1
    train_ds = ImageTensorDataset(*train, stats, repeat)
    return DataBundle(train_ds, ImageTensorDataset(*val, stats, repeat), num_classes, tuple(train_ds[0][0].shape))


# ---------------------------------------------------------------- built-in tensors


def _digits(opts: _Options) -> DataBundle:
    fraction = 0.2 if opts.val_fraction is None else opts.val_fraction
    x_train, y_train, x_val, y_val = load_digits_tensors(fraction, opts.split_seed)
    train, val = _split((x_train, y_train), (x_val, y_val), opts)
    return DataBundle(TensorDataset(*train), TensorDataset(*val), 10, tuple(x_train.shape[1:]))


def _mnist1d(opts: _Options) -> DataBundle:
    """``val_fraction`` None: the generator's own 80/20 train/test split; else a split of its train part."""
    x_train, y_train, x_test, y_test = load_mnist1d_tensors(opts.num_samples, opts.mnist1d_seed)
    test = (x_test, y_test) if opts.val_fraction is None else None
    train, val = _split((x_train, y_train), test, opts)
    return DataBundle(TensorDataset(*train), TensorDataset(*val), 10, tuple(x_train.shape[1:]))


# ---------------------------------------------------------------- torchvision data sets


def _load_torchvision(opts: _Options, spec: _TorchvisionSpec, train: bool) -> tuple[Pair, int]:
    """One split as ``((images uint8 (N, C, H, W), labels), num_classes)``; failures become ``ValueError``."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.cls_name)
    try:
        ds = cls(str(opts.root), train=train, download=opts.download)
    except (RuntimeError, URLError, OSError) as err:
        if opts.download:
            raise _bad(
                "download",
                True,
                f"downloading {spec.cls_name} into data.root={str(opts.root)!r} failed ({err}); this machine may "
                f"have no internet access: download it elsewhere, copy it to <root>/{spec.folder}/ and set "
                "data.download=false",
            ) from err
        raise _bad(
            "root",
            str(opts.root),
            f"{spec.cls_name} was not found there (or is corrupted) and data.download=false; set data.download=true "
            f"or point data.root at the folder that holds {spec.folder}/ ({err})",
        ) from err
    images = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
    images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)
    return (images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)), len(ds.classes)


def _torchvision(opts: _Options) -> DataBundle:
    spec = _TORCHVISION[opts.name]
    train, num_classes = _load_torchvision(opts, spec, train=True)
    test = _load_torchvision(opts, spec, train=False)[0] if opts.val_fraction is None else None
    return _image_bundle(*_split(train, test, opts), num_classes, spec.stats, opts)


# ---------------------------------------------------------------- image folders


def _scan(folder: Path, key: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and ``(path, class index)`` samples of an ImageFolder-layout folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise _bad(key, str(folder), "no such folder; point it at a folder of class sub-folders of images")
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise _bad(key, str(folder), f"it needs one sub-folder of images per class ({err})") from err
    return classes, samples


def _cache_file(folder: Path, samples: Sequence[tuple[str, int]], opts: _Options) -> Path:
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


def _decode_folder(samples: Sequence[tuple[str, int]], image_size: int | None) -> Pair:
    """Decode every sample (on a thread pool) into one uint8 tensor; all images must end up the same size."""
    first = _decode(samples[0][0], image_size)
    images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)

    def fill(i: int) -> None:
        img = _decode(samples[i][0], image_size)
        if img.shape != first.shape:
            raise _bad(
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


def _load_folder(folder: Path, classes: list[str], samples: Sequence[tuple[str, int]], opts: _Options) -> Pair:
    """The decoded folder, from the cache when it is there; otherwise decoded and written to the cache."""
    cache = _cache_file(folder, samples, opts)
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return blob["images"], blob["labels"]
    images, labels = _decode_folder(samples, opts.image_size)
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


def _imagefolder(opts: _Options) -> DataBundle:
    classes, samples = _scan(opts.root, "root")
    if opts.val_fraction is not None:
        _val_count(len(samples), opts.val_fraction)
    val_scan = None if opts.val_root is None else _scan(opts.val_root, "val_root")
    if val_scan is not None and val_scan[0] != classes:
        raise _bad(
            "val_root",
            str(opts.val_root),
            f"its classes {val_scan[0]} differ from the classes {classes} of data.root={str(opts.root)!r}",
        )
    train = _load_folder(opts.root, classes, samples, opts)
    test = None if val_scan is None else _load_folder(opts.val_root, *val_scan, opts)
    train, val = _split(train, test, opts)
    return _image_bundle(train, val, len(classes), _channel_stats(train[0]), opts)


_BUILDERS: dict[str, Callable[[_Options], DataBundle]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "cifar10": _torchvision,
    "mnist": _torchvision,
    "fashion_mnist": _torchvision,
    "imagefolder": _imagefolder,
}
