"""Data sets from one resolved ``data`` config group: tensor-backed datasets in memory.

Images are held as one uint8 tensor ``(N, C, H, W)`` served as normalised float32, the built-in
``digits`` and ``mnist1d`` as float32 tensors. Splits and subsets are seeded, so a run is
reproducible from its config. Bad config raises ``ValueError`` naming the key before any expensive
work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch.utils.data import TensorDataset

from prune_core.data.bundle import DataBundle
from prune_core.data.config import DataOptions, parse_data_config
from prune_core.data.digits import load_digits_tensors
from prune_core.data.imagefolder import imagefolder_bundle
from prune_core.data.mnist1d import load_mnist1d_tensors
from prune_core.data.splits import split_pairs
from prune_core.data.torchvision_sets import torchvision_bundle


def build_data(cfg: Mapping[str, Any]) -> DataBundle:
    """Build the train and validation sets that ``cfg`` (a resolved ``data`` config group) describes."""
    opts = parse_data_config(cfg)
    return BUILDERS[opts.name](opts)


def digits_bundle(opts: DataOptions) -> DataBundle:
    fraction = 0.2 if opts.val_fraction is None else opts.val_fraction
    x_train, y_train, x_val, y_val = load_digits_tensors(fraction, opts.split_seed)
    train, val = split_pairs((x_train, y_train), (x_val, y_val), opts)
    return DataBundle(TensorDataset(*train), TensorDataset(*val), 10, tuple(x_train.shape[1:]))


def mnist1d_bundle(opts: DataOptions) -> DataBundle:
    """``val_fraction`` None: the generator's own 80/20 train/test split; else a split of its train part."""
    x_train, y_train, x_test, y_test = load_mnist1d_tensors(opts.num_samples, opts.mnist1d_seed)
    test = (x_test, y_test) if opts.val_fraction is None else None
    train, val = split_pairs((x_train, y_train), test, opts)
    return DataBundle(TensorDataset(*train), TensorDataset(*val), 10, tuple(x_train.shape[1:]))


BUILDERS: dict[str, Callable[[DataOptions], DataBundle]] = {
    "digits": digits_bundle,
    "mnist1d": mnist1d_bundle,
    "cifar10": torchvision_bundle,
    "mnist": torchvision_bundle,
    "fashion_mnist": torchvision_bundle,
    "imagefolder": imagefolder_bundle,
}
