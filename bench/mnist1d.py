"""MNIST-1D benchmarks: the anchor against MATLAB's 1-D example and the criterion ablation.

MATLAB's 1-D example compresses a Conv1d sequence classifier to its maximum: 79.6% fewer
learnables. Here the built-in ``mnist1d_cnn`` (Conv1d) on MNIST-1D (generated offline, the
published seed), set up as ``conf/experiment/mnist1d_anchor.yaml``: train a baseline per seed, then
``compress_network`` it.

    python -m bench.mnist1d anchor      # goal 0.8: >= 80% fewer learnables, <= 1.0 point test drop
    python -m bench.mnist1d ablation    # taylor vs l1 vs random at 30/50/70% reduction
    python -m bench.mnist1d oneshot     # the same criteria, one pruning step and no fine-tuning
    python -m bench.mnist1d ablation --budget ft1   # the ablation with 1 fine-tuning epoch per iteration
    python -m bench.mnist1d anchor --smoke
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache, partial

import torch

from bench import pruning
from bench.experiments import experiment_config, task_settings
from prune_core.data import load_mnist1d_tensors
from prune_core.models import SequenceCNN


@cache
def splits(samples: int) -> pruning.Splits:
    """(train, validation, test): the package's test split; the last 10% of its train split validates."""
    x, y, x_test, y_test = load_mnist1d_tensors(num_samples=samples)
    n_val = len(y) // 10
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:]), (x_test, y_test)


def task(
    samples: int | None = None,
    width: int | None = None,
    baseline_epochs: int | None = None,
    finetune_epochs: int | None = None,
) -> pruning.Task:
    """The setup of ``conf/experiment/mnist1d_anchor.yaml`` (the sweep's own), its sizes changed where given:
    Adam throughout; the baseline trains most epochs at ``finetune.baseline_learn_rate`` (2e-3) and the last
    sixth at a tenth of it (the sweep keeps it constant)."""
    cfg = experiment_config("mnist1d_anchor")
    finetune = cfg["finetune"]
    baseline_epochs = baseline_epochs or finetune["baseline_epochs"]
    learn_rate, low = finetune["baseline_learn_rate"], baseline_epochs // 6
    return pruning.Task(
        name="mnist1d",
        model=partial(SequenceCNN, width=width or cfg["model"]["width"]),
        splits=partial(splits, samples or cfg["data"]["num_samples"]),
        baseline_stages=((learn_rate, baseline_epochs - low), (learn_rate / 10, low)),
        finetune_schedule=finetune["learn_rate_schedule"],
        **task_settings(cfg, finetune_epochs),
    )


def one_epoch_task() -> pruning.Task:
    """The default budget with 1 fine-tuning epoch per pruning iteration (the same baselines)."""
    return replace(task(finetune_epochs=1), name="mnist1d_ft1")


def smoke_task() -> pruning.Task:
    return replace(task(samples=400, width=8, baseline_epochs=1, finetune_epochs=1), increment=0.5)


BUDGETS = {"default": task, "ft1": one_epoch_task, "smoke": smoke_task}


def main(argv: list[str] | None = None) -> dict:
    return pruning.main(BUDGETS, __doc__, argv)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
