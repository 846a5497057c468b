"""Seeded train / validation splits of in-memory data sets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from prune_core.data.bundle import Pair
from prune_core.data.errors import bad_value

if TYPE_CHECKING:
    from prune_core.data.config import DataOptions


def val_count(n: int, fraction: float) -> int:
    n_val = round(n * fraction)
    if not 0 < n_val < n:
        raise bad_value("val_fraction", fraction, f"it leaves an empty train or validation set out of {n} samples")
    return n_val


def _take(pair: Pair, index: torch.Tensor) -> Pair:
    return pair[0][index], pair[1][index]


def split_pairs(train: Pair, test: Pair | None, opts: DataOptions) -> tuple[Pair, Pair]:
    """Seeded shuffle; the validation set is ``test`` or, when it is None, ``val_fraction`` of ``train``.

    ``max_train_samples`` / ``max_val_samples`` keep the first samples after the shuffle.
    """
    gen = torch.Generator().manual_seed(opts.split_seed)
    order = torch.randperm(len(train[1]), generator=gen)
    if test is None:
        n_val = val_count(len(order), opts.val_fraction)
        train_idx, val_idx, val_src = order[n_val:], order[:n_val], train
    else:
        train_idx, val_idx, val_src = order, torch.randperm(len(test[1]), generator=gen), test
    return _take(train, train_idx[: opts.max_train_samples]), _take(val_src, val_idx[: opts.max_val_samples])
