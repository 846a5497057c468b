"""Multi-objective search against a grid, and ASHA against the same search without it (issue 20 targets).

Per seed, three sweeps of the same number of trials over the same ranges, on MNIST-1D with one cached
baseline: the grid (reduction goal x reduction increment), an Optuna TPE search over those ranges
(objectives: max validation accuracy, min learnables), and that search with ASHA early stopping. Each
sweep's front and its hypervolume (``sweeps.report.hypervolume``: the share of the box between the
unpruned network and the ideal that the front dominates) come from the sweep itself; the wall time of
each sweep is measured around ``run_sweep``.

    python -m bench.search_vs_grid                      # 3 seeds x 16 trials: bench/results/search_vs_grid.json
    python -m bench.search_vs_grid --smoke              # 1 seed x 4 trials on 160 digits, no report
    python -m bench.search_vs_grid --learn-rates 0.003 0.03 --arms grid search_seeded --name search_vs_grid_lr
    python -m bench.search_vs_grid --goals 0.5 0.99 --arms grid search search_seeded --name search_vs_grid_099

``--goals LOW HIGH`` sets the reduction goals' range (0.5 to 0.95 unless given; ``conf/sweep/search.yaml`` ships
0.5 to 0.99). ``--learn-rates LOW HIGH`` adds a third axis, ``finetune.initial_learn_rate``: the grid takes LOW and
HIGH (and the two outer increments, so that it keeps its trial count), the searches sample it log-uniformly between
them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from pathlib import Path

import ray
import torch

from bench.reports import RESULTS
from bench.sweep_overhead import config
from sweeps.runner import run_sweep

GOALS = (0.5, 0.95)
"""The reduction goals both arms cover unless ``--goals`` says otherwise: the grid spreads its points evenly over
them, the search samples them."""
INCREMENTS = (0.1, 0.2, 0.3, 0.4)
COMMON = ["ray.max_concurrent_trials=2", "tracking.log_models=false"]
TASK = ["model=mnist1d_cnn", "data=mnist1d"]
SMOKE_TASK = ["+experiment=debug"]  # the tests' tiny preset: 160 digits, a 2-epoch baseline


Range = tuple[float, float]


def grid_overrides(trials: int, learn_rates: Range | None = None, goal_range: Range = GOALS) -> list[str]:
    """A grid of ``trials`` points: ``trials / len(INCREMENTS)`` goals evenly over ``goal_range``, times every
    increment; with ``learn_rates``, the outer two increments times the two learn rates instead."""
    goals = max(1, trials // len(INCREMENTS))
    low, high = goal_range
    values = [round(low + (high - low) * i / max(1, goals - 1), 4) for i in range(goals)]
    increments = INCREMENTS[: trials // goals] if learn_rates is None else (INCREMENTS[0], INCREMENTS[-1])
    overrides = [
        "sweep=single",
        f"+sweep.grid.prune.learnables_reduction_goal=[{','.join(map(str, values))}]",
        f"+sweep.grid.prune.learnables_reduction_increment=[{','.join(map(str, increments))}]",
    ]
    if learn_rates is not None:
        overrides.append(f"+sweep.grid.finetune.initial_learn_rate=[{learn_rates[0]},{learn_rates[1]}]")
    return overrides


ARMS = ("grid", "search", "search_asha", "search_seeded")
"""The sweeps run per seed: the grid, the search, the search with ASHA, and the search started from the two
extreme goals (at the middle increment) before it samples."""


def search_overrides(trials: int, arm: str, learn_rates: Range | None = None, goal_range: Range = GOALS) -> list[str]:
    """The search over ``goal_range`` x INCREMENTS (x ``learn_rates``, log-uniform) with ``trials`` samples (with
    ASHA, or seeded, per ``arm``)."""
    space = "sweep.space.prune"
    overrides = [
        "sweep=search",
        f"sweep.num_samples={trials}",
        f"{space}.learnables_reduction_goal.low={goal_range[0]}",
        f"{space}.learnables_reduction_goal.high={goal_range[1]}",
        f"{space}.learnables_reduction_increment.values=[{','.join(map(str, INCREMENTS))}]",
    ]
    if learn_rates is not None:
        low, high = learn_rates
        overrides.append(f"+sweep.space.finetune.initial_learn_rate={{type:loguniform,low:{low},high:{high}}}")
    if arm == "search_asha":
        overrides += ["sweep.scheduler=asha", "sweep.grace_period=2", "sweep.reduction_factor=2"]
    if arm == "search_seeded":
        overrides += [
            f"+sweep.grid.prune.learnables_reduction_goal=[{goal_range[0]},{goal_range[1]}]",
            f"+sweep.grid.prune.learnables_reduction_increment=[{INCREMENTS[len(INCREMENTS) // 2 - 1]}]",
        ]
        if learn_rates is not None:  # the middle of the learn rates' log range
            overrides.append(f"+sweep.grid.finetune.initial_learn_rate=[{math.sqrt(low * high):.4g}]")
    return overrides


def run_arm(output_dir: Path, task: list[str], seed: int, arm: str, trials: int, args: argparse.Namespace) -> dict:
    """One sweep; its front, hypervolume, trial points and wall time."""
    ranges = (args.learn_rates, tuple(args.goals))
    overrides = grid_overrides(trials, *ranges) if arm == "grid" else search_overrides(trials, arm, *ranges)
    cfg = config(output_dir, *task, *COMMON, *overrides, f"sweep.seeds=[{seed}]", f"name={arm}_seed{seed}")
    start = time.perf_counter()
    outcome = run_sweep(cfg)
    seconds = time.perf_counter() - start
    points = outcome.table[["learnables", "val_accuracy"]].to_dict("records")
    front = outcome.front[["learnables", "val_accuracy"]].to_dict("records")
    return {
        "seed": seed,
        "arm": arm,
        "hypervolume": outcome.hypervolume,
        "seconds": seconds,
        "finished": len(outcome.table),
        "stopped": outcome.stopped_trials,
        "failed": outcome.failed_trials,
        "trials": points,
        "front": front,
    }


def main(argv: list[str] | None = None) -> dict:
    from bench.common import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16, help="trials per sweep (a multiple of 4)")
    parser.add_argument("--name", default="search_vs_grid", help="report name")
    parser.add_argument(
        "--smoke", action="store_true", help="1 seed, 4 trials per sweep, the tests' tiny digits, no report"
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--merge", action="store_true", help="keep the report's runs of the other arms")
    parser.add_argument(
        "--learn-rates", nargs=2, type=float, metavar=("LOW", "HIGH"), help="also sweep finetune.initial_learn_rate"
    )
    parser.add_argument(
        "--goals", nargs=2, type=float, metavar=("LOW", "HIGH"), default=GOALS, help="the reduction goals' range"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.trials = 1, 4
    task = SMOKE_TASK if args.smoke else TASK
    ray.init(num_cpus=2, include_dashboard=False)
    runs = []
    with tempfile.TemporaryDirectory(prefix="search-vs-grid-") as folder:
        for seed, arm in itertools.product(range(args.seeds), args.arms):
            runs.append(run_arm(Path(folder), task, seed, arm, args.trials, args))
            print(f"seed {seed} {arm}: hypervolume {runs[-1]['hypervolume']:.4f} in {runs[-1]['seconds']:.0f} s")
    ray.shutdown()
    results = {
        "trials_per_sweep": args.trials,
        "goals": list(args.goals),
        "increments": INCREMENTS,
        "learn_rates": args.learn_rates,
        "runs": runs,
    }
    if args.smoke:
        return results
    if args.merge and (RESULTS / f"{args.name}.json").is_file():
        earlier = json.loads((RESULTS / f"{args.name}.json").read_text())["results"]["runs"]
        results["runs"] = [run for run in earlier if run["arm"] not in args.arms] + runs
    write_report(args.name, torch.device("cpu"), results)
    return results


if __name__ == "__main__":
    main()
