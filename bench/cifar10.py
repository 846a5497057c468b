"""CIFAR-10 benchmarks: the anchor against MATLAB's CIFAR-10 example and a criterion ablation.

MATLAB's example prunes a 0.27 M-learnable residual network by 55.36%, accuracy 90.24% -> 87.36%.
Here the built-in ``resnet20`` (272,474 learnables) on the CIFAR-10 copy in ``../shared/data``
(JPEG, ImageFolder layout), with random-crop and flip augmentation (``augment="crop_flip"``). The default budget is a
reduced one that fits 2 CPU cores; ``--budget full`` is the GPU schedule.

    tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C ~/.cache/datasets   # once; or set CIFAR10_JPEG
    python -m bench.cifar10 anchor --seeds 1 --threads 1   # goal 0.55: >= 55% fewer, <= 1.0 point drop
    python -m bench.cifar10 ablation --budget subset       # taylor vs l1 vs random at 30/50/70%, 5k images
    python -m bench.cifar10 anchor --budget full           # the GPU schedule
    python -m bench.cifar10 anchor --smoke                 # synthetic CIFAR-shaped images, seconds
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import cache, partial
from pathlib import Path

import torch

from bench import pruning
from bench.experiments import experiment_config, task_settings
from prune_core.data import ImageTensorDataset, build_data
from prune_core.models import resnet20

ROOT = Path(os.environ.get("CIFAR10_JPEG", "~/.cache/datasets/cifar10-jpeg")).expanduser()
VAL_SAMPLES = 5000


@cache
def splits(train_samples: int, root: Path = ROOT) -> pruning.Splits:
    """(train, validation, test): the first ``train_samples`` of the shuffled train folder (augmented),
    its last 5,000 images for validation, and the official 10,000-image test folder."""
    bundle = build_data({"name": "imagefolder", "root": str(root / "train"), "val_root": str(root / "test")})
    images, labels, stats = bundle.train.images, bundle.train.labels, (bundle.train.mean, bundle.train.std)
    stats = tuple(tuple(s.flatten().tolist()) for s in stats)
    if train_samples > len(labels) - VAL_SAMPLES:
        raise ValueError(f"train_samples={train_samples}: at most {len(labels) - VAL_SAMPLES} are available")
    train = ImageTensorDataset(images[:train_samples], labels[:train_samples], stats, augment="crop_flip")
    val = ImageTensorDataset(images[-VAL_SAMPLES:], labels[-VAL_SAMPLES:], stats)
    return train, val, bundle.val


@cache
def synthetic_splits() -> pruning.Splits:
    """CIFAR-shaped random images, for the smoke run."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (96,), generator=gen)
    stats = ((0.5,) * 3, (0.25,) * 3)
    data = ImageTensorDataset(images, labels, stats)
    return ImageTensorDataset(images, labels, stats, augment="crop_flip"), data, data


def task(
    train_samples: int | None = None,
    baseline_epochs: int | None = None,
    finetune_epochs: int | None = None,
    experiment: str = "cifar10_resnet20",
) -> pruning.Task:
    """The setup of ``conf/experiment/<experiment>.yaml`` (the sweep's own), its sizes changed where given:
    SGD with momentum 0.9, weight decay 5e-4, batch 128, fine-tuning at 0.01. The baseline trains at
    ``finetune.baseline_learn_rate`` (0.1), then a tenth and a hundredth of it for the last fifth and tenth
    of its epochs (the sweep anneals it instead)."""
    cfg = experiment_config(experiment)
    data, finetune = cfg["data"], cfg["finetune"]
    train_samples = train_samples or data["max_train_samples"]
    baseline_epochs = baseline_epochs or finetune["baseline_epochs"]
    low, lowest, learn_rate = baseline_epochs // 5, baseline_epochs // 10, finetune["baseline_learn_rate"]
    return pruning.Task(
        name="cifar10",
        model=resnet20,
        splits=partial(splits, train_samples),
        baseline_stages=(
            (learn_rate, baseline_epochs - low - lowest),
            (learn_rate / 10, low),
            (learn_rate / 100, lowest),
        ),
        **task_settings(cfg, finetune_epochs),
    )


def reduced_one_epoch_task() -> pruning.Task:
    """The reduced budget with 1 fine-tuning epoch per pruning iteration (the same baseline)."""
    return replace(task(finetune_epochs=1), name="cifar10_ft1")


def reduced_retrain_task() -> pruning.Task:
    """The reduced budget with 1 fine-tuning epoch per pruning iteration, then MATLAB's retraining
    of the pruned network: 4 epochs from 0.01, dropped tenfold every 2 epochs."""
    return replace(task(finetune_epochs=1), name="cifar10_retrain", retrain_epochs=4)


def subset_task() -> pruning.Task:
    """The ablation's CIFAR-10 subset (``conf/experiment/cifar10_subset.yaml``): 5,000 training images, 1
    fine-tuning epoch and 20% of the learnables per iteration."""
    return replace(task(experiment="cifar10_subset"), name="cifar10_subset")


def full_task() -> pruning.Task:
    """The GPU schedule: all 45,000 training images, 160 baseline epochs, 4 fine-tuning epochs per
    iteration, then MATLAB's retraining (10 epochs from 0.01, dropped tenfold every 2)."""
    return replace(
        task(train_samples=45000, baseline_epochs=160, finetune_epochs=4), name="cifar10_full", retrain_epochs=10
    )


def smoke_task() -> pruning.Task:
    return replace(
        task(finetune_epochs=1),
        splits=synthetic_splits,
        baseline_stages=((0.01, 1),),
        batch=32,
        increment=0.3,
        retrain_epochs=1,
    )


BUDGETS = {
    "reduced": task,
    "reduced_ft1": reduced_one_epoch_task,
    "reduced_retrain": reduced_retrain_task,
    "subset": subset_task,
    "full": full_task,
    "smoke": smoke_task,
}


def main(argv: list[str] | None = None) -> dict:
    return pruning.main(BUDGETS, __doc__, argv)


if __name__ == "__main__":
    main()
