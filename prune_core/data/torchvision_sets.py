"""torchvision's CIFAR-10, MNIST and FashionMNIST, read (or downloaded) into uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.error import URLError

import numpy as np
import torch

from prune_core.data.bundle import DataBundle, Pair, Stats, image_bundle
from prune_core.data.errors import bad_value
from prune_core.data.splits import split_pairs

if TYPE_CHECKING:
    from prune_core.data.config import DataOptions


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to find and normalise one torchvision data set."""

    cls_name: str
    folder: str
    stats: Stats


TORCHVISION: dict[str, TorchvisionSpec] = {
    "cifar10": TorchvisionSpec("CIFAR10", "cifar-10-batches-py", ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
    "mnist": TorchvisionSpec("MNIST", "MNIST/raw", ((0.1307,), (0.3081,))),
    "fashion_mnist": TorchvisionSpec("FashionMNIST", "FashionMNIST/raw", ((0.2860,), (0.3530,))),
}


def _loadtorchvision_bundle(opts: DataOptions, spec: TorchvisionSpec, train: bool) -> tuple[Pair, int]:
    """One split as ``((images uint8 (N, C, H, W), labels), num_classes)``; failures become ``ValueError``."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.cls_name)
    try:
        ds = cls(str(opts.root), train=train, download=opts.download)
    except (RuntimeError, URLError, OSError) as err:
        if opts.download:
            raise bad_value(
                "download",
                True,
                f"downloading {spec.cls_name} into data.root={str(opts.root)!r} failed ({err}); this machine may "
                f"have no internet access: download it elsewhere, copy it to <root>/{spec.folder}/ and set "
                "data.download=false",
            ) from err
        raise bad_value(
            "root",
            str(opts.root),
            f"{spec.cls_name} was not found there (or is corrupted) and data.download=false; set data.download=true "
            f"or point data.root at the folder that holds {spec.folder}/ ({err})",
        ) from err
    images = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
    images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)
    return (images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)), len(ds.classes)


def torchvision_bundle(opts: DataOptions) -> DataBundle:
    spec = TORCHVISION[opts.name]
    train, num_classes = _loadtorchvision_bundle(opts, spec, train=True)
    test = _loadtorchvision_bundle(opts, spec, train=False)[0] if opts.val_fraction is None else None
    return image_bundle(*split_pairs(train, test, opts), num_classes, spec.stats, opts.grayscale_to_rgb, opts.augment)
