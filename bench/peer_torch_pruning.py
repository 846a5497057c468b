"""Peer comparison on MNIST-1D: our compress_network against Torch-Pruning's Taylor importance.

Same trained baseline per seed, same data, same fine-tuning (Adam, same learn rate, epochs and
batch size per pruning iteration), same number of pruning iterations, and the same learnables
reduction: Torch-Pruning's global pruning ratio is found by bisection so that its final
learnables match ours (each bisection probe runs its iterative pruning schedule without
fine-tuning; the probes' time is not counted in its wall time).

    pip install -e ".[bench]"
    python -m bench.peer_torch_pruning              # writes bench/results/peer_torch_pruning.json
    python -m bench.peer_torch_pruning --smoke
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from bench.common import write_report
from bench.mnist1d import SMOKE, Budget, baseline, finetune_options, prune_run, splits, test_accuracy
from prune_core.metrics import learnable_parameters
from prune_core.models import SequenceCNN
from prune_core.train import as_loader, resolve_loss, train_network


def tp_prune(model, ratio: float, steps: int, budget: Budget, seed: int, finetune: bool) -> torch.nn.Module:
    """Torch-Pruning's iterative Taylor schedule: score on the gradients of up to 100 mini-batches,
    prune, fine-tune (when ``finetune``), ``steps`` times."""
    import torch_pruning as tp

    train = splits(budget.samples)[0]
    options = finetune_options(budget, seed)
    loss = resolve_loss("crossentropy")
    example = train[0][:1]
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.TaylorImportance(),
        pruning_ratio=ratio,
        iterative_steps=steps,
        global_pruning=True,
        ignored_layers=[model.classifier],
    )
    for _ in range(steps):
        model.train()
        model.zero_grad()
        for i, (x, y) in enumerate(as_loader(train, options, train=True)):
            if i >= 100:
                break
            loss(model(x), y).backward()
        pruner.step()
        if finetune:
            train_network(model, train, "crossentropy", options)
    return model.eval()


def matched_ratio(weights: dict, target: int, steps: int, budget: Budget, seed: int) -> float:
    """Bisection on Torch-Pruning's pruning ratio so that its learnables come closest to ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        model = SequenceCNN(width=budget.width)
        model.load_state_dict(copy.deepcopy(weights))
        if learnable_parameters(tp_prune(model, mid, steps, budget, seed, finetune=False)) > target:
            lo = mid
        else:
            hi = mid
    return hi


def compare(seed: int, goal: float, budget: Budget) -> dict:
    ours = prune_run(seed, goal, "taylor", budget)
    weights, base_acc = baseline(seed, budget)
    ratio = matched_ratio(weights, ours["learnables"], ours["pruning_iterations"], budget, seed)
    model = SequenceCNN(width=budget.width)
    model.load_state_dict(weights)
    start = time.perf_counter()
    pruned = tp_prune(model, ratio, ours["pruning_iterations"], budget, seed, finetune=True)
    seconds = time.perf_counter() - start
    return {
        "seed": seed,
        "baseline_test_accuracy": base_acc,
        "ours": {k: ours[k] for k in ("learnables", "reduction", "pruned_test_accuracy", "seconds")},
        "torch_pruning": {
            "pruning_ratio": ratio,
            "learnables": learnable_parameters(pruned),
            "reduction": 1 - learnable_parameters(pruned) / ours["original_learnables"],
            "pruned_test_accuracy": test_accuracy(pruned, budget),
            "seconds": seconds,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goal", type=float, default=0.8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    budget, seeds = (SMOKE, [0]) if args.smoke else (Budget(), list(range(args.seeds)))
    rows = [compare(seed, args.goal, budget) for seed in seeds]
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
    results = {"goal": args.goal, "budget": vars(budget), "runs": rows, "summary": summary}
    if not args.smoke:
        write_report("peer_torch_pruning", torch.device("cpu"), results)
    return results


if __name__ == "__main__":
    main()
