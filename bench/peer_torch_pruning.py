"""Peer comparison: our compress_network against Torch-Pruning's Taylor importance.

Same trained baseline per seed, same data, same fine-tuning (solver, learn rate, epochs and
batch size per pruning iteration, and the same final fine-tuning after the loop: ``--final-epochs``),
same number of pruning iterations, and the same learnables
reduction: Torch-Pruning's global pruning ratio is found by bisection so that its final
learnables match ours (each bisection probe runs its iterative pruning schedule without
fine-tuning, scoring on ``--probe-batches`` mini-batches; the probes' time is not counted in
its wall time).

    pip install -e ".[bench]"
    python -m bench.peer_torch_pruning                                   # MNIST-1D, goal 0.8, 3 seeds
    python -m bench.peer_torch_pruning --task cifar10 --budget reduced_ft1 --goal 0.55 --seeds 1 \
        --probe-batches 5 --threads 1
    python -m bench.peer_torch_pruning --smoke
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from bench import cifar10, mnist1d, pruning
from bench.common import write_report
from prune_core.metrics import learnable_parameters
from prune_core.train import as_loader, resolve_loss, train_network

TASKS = {"mnist1d": mnist1d.BUDGETS, "cifar10": cifar10.BUDGETS}


def tp_prune(
    model: nn.Module, ratio: float, steps: int, task: pruning.Task, seed: int, finetune: bool, scoring_batches: int
) -> nn.Module:
    """Torch-Pruning's iterative Taylor schedule: score on the gradients of ``scoring_batches``
    mini-batches, prune, fine-tune (when ``finetune``), ``steps`` times. Linear layers are kept."""
    import torch_pruning as tp

    train = task.splits()[0]
    options = pruning.finetune_options(task, seed)
    loss = resolve_loss("crossentropy")
    model.to(pruning.device())
    pruner = tp.pruner.MetaPruner(
        model,
        pruning.example_input(task),
        importance=tp.importance.TaylorImportance(),
        pruning_ratio=ratio,
        iterative_steps=steps,
        global_pruning=True,
        ignored_layers=[m for m in model.modules() if isinstance(m, nn.Linear)],
    )
    for _ in range(steps):
        model.train()
        model.zero_grad()
        for i, (x, y) in enumerate(as_loader(train, options, train=True)):
            if i >= scoring_batches:
                break
            loss(model(x.to(pruning.device())), y.to(pruning.device())).backward()
        pruner.step()
        if finetune:
            train_network(model, train, "crossentropy", options)
    return model.eval()


def matched_ratio(task: pruning.Task, seed: int, target: int, steps: int, probe_batches: int) -> float:
    """Bisection on Torch-Pruning's pruning ratio so that its learnables come closest to ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        model = pruning.trained_model(task, seed)
        if learnable_parameters(tp_prune(model, mid, steps, task, seed, False, probe_batches)) > target:
            lo = mid
        else:
            hi = mid
    return hi


def compare(task: pruning.Task, seed: int, goal: float, probe_batches: int) -> dict:
    ours = pruning.prune_run(task, seed, goal, "taylor")
    steps = ours["pruning_iterations"]
    ratio = matched_ratio(task, seed, ours["learnables"], steps, probe_batches)
    model = copy.deepcopy(pruning.trained_model(task, seed))
    start = time.perf_counter()
    pruned = tp_prune(model, ratio, steps, task, seed, True, task.scoring_batches)
    pruning.final_tune(task, seed, pruned)
    seconds = time.perf_counter() - start
    retrained = pruning.retrain(task, seed, pruned)
    return {
        "seed": seed,
        "baseline_test_accuracy": ours["baseline_test_accuracy"],
        "ours": {
            k: ours[k]
            for k in (
                "learnables",
                "reduction",
                "pruned_test_accuracy",
                "seconds",
                "test_accuracy_before_retrain",
                "retrain_seconds",
            )
            if k in ours
        },
        "torch_pruning": {
            "pruning_ratio": ratio,
            "learnables": learnable_parameters(pruned),
            "reduction": 1 - learnable_parameters(pruned) / ours["original_learnables"],
            "pruned_test_accuracy": pruning.test_accuracy(task, pruned),
            **retrained,
            "seconds": seconds + retrained.get("retrain_seconds", 0.0),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="mnist1d")
    parser.add_argument("--budget", default=None, help="a budget of the task's module (default: its first)")
    parser.add_argument("--goal", type=float, default=0.8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--probe-batches", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    pruning.add_recipe_arguments(parser)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = TASKS[args.task]
    if args.budget is not None and args.budget not in budgets:
        parser.error(f"--budget {args.budget!r}: {args.task} has {', '.join(budgets)}")
    task = pruning.with_recipe(budgets["smoke" if args.smoke else args.budget or next(iter(budgets))](), args)
    seeds = [0] if args.smoke else list(range(args.seeds))
    rows = [compare(task, seed, args.goal, args.probe_batches) for seed in seeds]
    summary = {
        tool: {
            "accuracy_mean": statistics.mean(r[tool]["pruned_test_accuracy"] for r in rows),
            "accuracy_std": statistics.stdev(r[tool]["pruned_test_accuracy"] for r in rows) if len(rows) > 1 else 0.0,
            "reduction_mean": statistics.mean(r[tool]["reduction"] for r in rows),
            "seconds_mean": statistics.mean(r[tool]["seconds"] for r in rows),
        }
        for tool in ("ours", "torch_pruning")
    }
    for tool, s in summary.items():
        print(
            f"{tool:14s} reduction {100 * s['reduction_mean']:.1f}%  test accuracy {s['accuracy_mean']:.2f} "
            f"+- {s['accuracy_std']:.2f}%  wall {s['seconds_mean']:.1f} s"
        )
    results = {"task": task.describe(), "goal": args.goal, "runs": rows, "summary": summary}
    if not args.smoke:
        name = "peer_torch_pruning" if task.name == "mnist1d" else f"peer_torch_pruning_{task.name}"
        write_report(name, pruning.device(), results)
    return results


if __name__ == "__main__":
    main()
