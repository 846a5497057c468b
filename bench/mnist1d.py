"""MNIST-1D benchmarks: the anchor against MATLAB's 1-D example and the criterion ablation.

MATLAB's 1-D example compresses a Conv1d sequence classifier to its maximum: 79.6% fewer
learnables. Here the built-in ``mnist1d_cnn`` (Conv1d) on MNIST-1D (generated offline, the
published seed): train a baseline per seed, then ``compress_network`` it.

    python -m bench.mnist1d anchor      # goal 0.8: >= 80% fewer learnables, <= 1.0 point test drop
    python -m bench.mnist1d ablation    # taylor vs l1 vs random at 30/50/70% reduction
    python -m bench.mnist1d oneshot     # the same criteria, one pruning step and no fine-tuning
    python -m bench.mnist1d anchor --smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from functools import cache

import torch

from bench.common import write_report
from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network
from prune_core.data import load_mnist1d_tensors
from prune_core.metrics import learnable_parameters
from prune_core.models import SequenceCNN
from prune_core.train import as_loader, evaluate, resolve_loss, train_network


@dataclass(frozen=True)
class Budget:
    """Training budget of one benchmark run (the same for every criterion and seed)."""

    samples: int = 5000
    width: int = 64
    baseline_epochs: int = 60
    finetune_epochs: int = 4
    increment: float = 0.1
    batch: int = 64


SMOKE = Budget(samples=400, width=8, baseline_epochs=1, finetune_epochs=1, increment=0.5)


@cache
def splits(samples: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(train, validation, test): the package's test split; the last 10% of its train split validates."""
    x, y, x_test, y_test = load_mnist1d_tensors(num_samples=samples)
    n_val = len(y) // 10
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:]), (x_test, y_test)


def test_accuracy(model: torch.nn.Module, budget: Budget) -> float:
    options = TrainingOptions(mini_batch_size=256, device="cpu")
    test = as_loader(splits(budget.samples)[2], options, train=False)
    return evaluate(model, test, resolve_loss("crossentropy"), ["accuracy"], torch.device("cpu"))["accuracy"]


@cache
def baseline(seed: int, budget: Budget) -> tuple[dict, float]:
    """Trained baseline weights and test accuracy for ``seed`` (cached within the process)."""
    train = splits(budget.samples)[0]
    torch.manual_seed(seed)
    model = SequenceCNN(width=budget.width)
    # step schedule: most epochs at 2e-3, the last sixth at 2e-4 (Adam)
    for learn_rate, epochs in (
        (2e-3, budget.baseline_epochs - budget.baseline_epochs // 6),
        (2e-4, budget.baseline_epochs // 6),
    ):
        if epochs:
            options = TrainingOptions(
                solver="adam",
                initial_learn_rate=learn_rate,
                l2_regularization=0.0,
                mini_batch_size=budget.batch,
                max_epochs=epochs,
                device="cpu",
                seed=seed,
            )
            train_network(model, train, "crossentropy", options)
    return model.state_dict(), test_accuracy(model, budget)


def finetune_options(budget: Budget, seed: int, **extra) -> TrainingOptions:
    """The fine-tuning settings every pruning method gets per pruning iteration (Adam, 5e-4)."""
    return TrainingOptions(
        solver="adam",
        initial_learn_rate=5e-4,
        l2_regularization=0.0,
        mini_batch_size=budget.batch,
        max_epochs=budget.finetune_epochs,
        device="cpu",
        seed=seed,
        **extra,
    )


def _outcome(seed: int, goal: float, criterion: str, base_acc: float, pruned: torch.nn.Module, budget: Budget) -> dict:
    """The fields every run reports: its settings and the test accuracy before and after pruning."""
    return {
        "seed": seed,
        "goal": goal,
        "criterion": criterion,
        "baseline_test_accuracy": base_acc,
        "pruned_test_accuracy": test_accuracy(pruned, budget),
    }


def prune_run(seed: int, goal: float, criterion: str, budget: Budget) -> dict:
    """One compress_network run from the seed's baseline; test accuracy before and after."""
    weights, base_acc = baseline(seed, budget)
    model = SequenceCNN(width=budget.width)
    model.load_state_dict(weights)
    train, val, _ = splits(budget.samples)
    options = finetune_options(budget, seed, validation_data=val, validation_frequency=10**9)
    start = time.perf_counter()
    pruned, info = compress_network(
        model,
        train,
        "crossentropy",
        options,
        learnables_reduction_goal=goal,
        learnables_reduction_increment=budget.increment,
        criterion=criterion,
        verbosity_level="off",
    )
    return {
        **_outcome(seed, goal, criterion, base_acc, pruned, budget),
        "original_learnables": info.original_learnables,
        "learnables": info.learnables,
        "reduction": info.reduction,
        "pruning_iterations": int(info.pruning_history["iteration"].max()),
        "seconds": time.perf_counter() - start,
    }


def oneshot_run(seed: int, goal: float, criterion: str, budget: Budget) -> dict:
    """Prune the seed's baseline once to the goal, without fine-tuning: the criterion alone decides.

    Taylor scores are accumulated over one pass of the training set (model in train mode, no
    weight updates).
    """
    weights, base_acc = baseline(seed, budget)
    model = SequenceCNN(width=budget.width)
    model.load_state_dict(weights)
    train = splits(budget.samples)[0]
    pnet = TaylorPrunableNetwork(model, train[0][:1], criterion=criterion)
    torch.manual_seed(seed)
    if criterion == "taylor":
        pnet.train()
        loss = resolve_loss("crossentropy")
        for x, y in as_loader(train, finetune_options(budget, seed), train=True):
            out, acts = pnet.forward_with_activations(x)
            pnet.update_score(acts, torch.autograd.grad(loss(out, y), acts))
    pnet.prune_to_learnables(int(pnet.learnables * (1 - goal)))
    pruned = pnet.to_module().eval()
    return {
        **_outcome(seed, goal, criterion, base_acc, pruned, budget),
        "reduction": 1 - pnet.learnables / learnable_parameters(model),
    }


def summarize(rows: list[dict]) -> dict:
    drops = [r["baseline_test_accuracy"] - r["pruned_test_accuracy"] for r in rows]
    return {
        "runs": len(rows),
        "reduction_min": min(r["reduction"] for r in rows),
        "baseline_mean": statistics.mean(r["baseline_test_accuracy"] for r in rows),
        "pruned_mean": statistics.mean(r["pruned_test_accuracy"] for r in rows),
        "drop_mean": statistics.mean(drops),
        "drop_std": statistics.stdev(drops) if len(drops) > 1 else 0.0,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("anchor", "ablation", "oneshot"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    budget, seeds = (SMOKE, [0]) if args.smoke else (Budget(), list(range(args.seeds)))
    if args.experiment == "anchor":
        rows = [prune_run(seed, 0.8, "taylor", budget) for seed in seeds]
        results = {"budget": vars(budget), "runs": rows, "summary": summarize(rows)}
        s = results["summary"]
        print(
            f"reduction >= {100 * s['reduction_min']:.1f}%, test accuracy {s['baseline_mean']:.2f}% -> "
            f"{s['pruned_mean']:.2f}% (drop {s['drop_mean']:.2f} +- {s['drop_std']:.2f} points, {s['runs']} seeds)"
        )
    else:
        run = prune_run if args.experiment == "ablation" else oneshot_run
        rows = [
            run(seed, goal, criterion, budget)
            for goal in (0.3, 0.5, 0.7)
            for criterion in ("taylor", "l1", "random")
            for seed in seeds
        ]
        curves = {
            f"{criterion}@{goal}": summarize([r for r in rows if r["criterion"] == criterion and r["goal"] == goal])
            for goal in (0.3, 0.5, 0.7)
            for criterion in ("taylor", "l1", "random")
        }
        results = {"budget": vars(budget), "runs": rows, "summary": curves}
        for key, s in curves.items():
            print(f"{key:12s} test accuracy {s['pruned_mean']:.2f}% (drop {s['drop_mean']:.2f} +- {s['drop_std']:.2f})")
    if not args.smoke:
        write_report(f"mnist1d_{args.experiment}", torch.device("cpu"), results)
    return results


if __name__ == "__main__":
    main()
