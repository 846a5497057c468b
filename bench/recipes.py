"""Fine-tuning recipes compared: anchor reports of one task that differ only in how it fine-tunes.

Each named report is a ``bench.mnist1d`` or ``bench.cifar10`` anchor run with other recipe flags
(``--schedule``, ``--final-epochs``, ``--carry``) from the same cached baselines, so the arms are
compared seed by seed against the first one:

    python -m bench.recipes mnist1d_anchor mnist1d_cos_final4_anchor mnist1d_cos_final4_carry_anchor \
        --name mnist1d_recipes
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from bench.common import write_report
from bench.reports import RESULTS


def fine_tuning_epochs(budget: dict, run: dict) -> int:
    """Every fine-tuning epoch of a run: per pruning iteration, and the final fine-tuning."""
    return budget["finetune_epochs"] * run["pruning_iterations"] + budget.get("final_epochs", 0)


def arm(report: dict, reference: dict) -> dict:
    """One recipe's figures, and its test accuracy minus the reference's, paired by seed."""
    runs, budget = report["results"]["runs"], report["results"]["budget"]
    by_seed = {r["seed"]: r for r in reference["results"]["runs"]}
    if sorted(by_seed) != sorted(r["seed"] for r in runs) or any(
        by_seed[r["seed"]]["baseline_test_accuracy"] != r["baseline_test_accuracy"] for r in runs
    ):
        raise SystemExit(f"{report['benchmark']}: not the same seeds and baselines as {reference['benchmark']}")
    accuracy = [r["pruned_test_accuracy"] for r in runs]
    drops = [r["baseline_test_accuracy"] - r["pruned_test_accuracy"] for r in runs]
    paired = [r["pruned_test_accuracy"] - by_seed[r["seed"]]["pruned_test_accuracy"] for r in runs]
    spread = statistics.stdev if len(runs) > 1 else (lambda _: 0.0)
    return {
        "benchmark": report["benchmark"],
        "schedule": budget.get("finetune_schedule", "none"),
        "final_epochs": budget.get("final_epochs", 0),
        "carry_optimizer_state": budget.get("carry_optimizer_state", False),
        "fine_tuning_epochs": statistics.mean(fine_tuning_epochs(budget, r) for r in runs),
        "seeds": len(runs),
        "accuracy": accuracy,
        "accuracy_mean": statistics.mean(accuracy),
        "accuracy_std": spread(accuracy),
        "drop_mean": statistics.mean(drops),
        "drop_std": spread(drops),
        "reduction_min": min(r["reduction"] for r in runs),
        "paired_gain_mean": statistics.mean(paired),
        "paired_gain_se": spread(paired) / len(paired) ** 0.5,
        "seeds_ahead": sum(p > 0 for p in paired),
        "seconds_mean": statistics.mean(r["seconds"] for r in runs),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="anchor report names in bench/results/ (first: the reference)")
    parser.add_argument("--name", required=True, help="the comparison's report name (bench/results/<name>.json)")
    args = parser.parse_args(argv)
    reports = [json.loads((RESULTS / f"{name}.json").read_text()) for name in args.reports]
    arms = [arm(report, reports[0]) for report in reports]
    for a in arms:
        print(
            f"{a['benchmark']:40s} {a['fine_tuning_epochs']:5.1f} epochs  accuracy {a['accuracy_mean']:.2f} +- "
            f"{a['accuracy_std']:.2f}  drop {a['drop_mean']:.2f} +- {a['drop_std']:.2f}  vs first "
            f"{a['paired_gain_mean']:+.2f} (s.e. {a['paired_gain_se']:.2f}, {a['seeds_ahead']}/{a['seeds']} ahead)"
        )
    return write_report(args.name, torch.device("cpu"), {"reference": args.reports[0], "arms": arms})


if __name__ == "__main__":
    main()
