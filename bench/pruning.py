"""What the accuracy benchmarks share: a task (model, data, budget), its baselines and its pruning runs.

A :class:`Task` fixes everything but the pruning method, so that every criterion, seed and tool
gets the same trained baseline, data and fine-tuning budget. ``python -m bench.mnist1d`` and
``python -m bench.cifar10`` define their tasks and call :func:`main`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.common import write_report
from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network
from prune_core.importance import GROUP_REDUCTIONS
from prune_core.metrics import learnable_parameters
from prune_core.train import as_loader, evaluate, resolve_loss, train_network
from sweeps.baseline import trained_once

Splits = tuple[Any, Any, Any]  # (train, validation, test): Datasets or (inputs, targets) pairs
BASELINE_CACHE = Path(os.environ.get("TAYLOR_PRUNE_BENCH_CACHE", "~/.cache/taylor-prune/bench")).expanduser()
GOALS = (0.3, 0.5, 0.7)
CRITERIA = ("taylor", "l1", "random")


@dataclass(frozen=True)
class Task:
    """One benchmark setting: the same for every criterion, seed and tool.

    ``baseline_stages`` is a step schedule of ``(learn_rate, epochs)``; ``solver``,
    ``l2_regularization`` and ``batch`` apply to the baseline and to fine-tuning, which runs
    ``finetune_epochs`` at ``finetune_learn_rate`` per pruning iteration, on the
    ``finetune_schedule`` (``"none"``: constant; ``"cosine"``: annealed to 0 every iteration),
    carrying the optimizer's state across pruning steps when ``carry_optimizer_state``, then
    ``final_epochs`` of compress_network's final fine-tuning (cosine to 0). ``retrain_epochs``
    retrain the pruned network afterwards, as MATLAB's CIFAR-10 example does: from
    ``finetune_learn_rate``, dropped tenfold every ``retrain_drop_period`` epochs. ``scoring_batches``
    caps the one-shot scoring pass and Torch-Pruning's gradient pass. ``group_reduction`` is
    passed to the engine (how a coupled group's layer scores combine). ``baseline_seed``, when
    set, makes every run start from that seed's baseline: the run's own seed then changes only the
    pruning and fine-tuning (shuffles, random criterion), as between the trials of a sweep.
    """

    name: str
    model: Callable[[], nn.Module]
    splits: Callable[[], Splits]
    anchor_goal: float
    baseline_stages: tuple[tuple[float, int], ...]
    finetune_learn_rate: float
    finetune_epochs: int
    increment: float
    solver: str = "adam"
    l2_regularization: float = 0.0
    batch: int = 64
    scoring_batches: int = 100
    retrain_epochs: int = 0
    retrain_drop_period: int = 2
    group_reduction: str = "sum"
    finetune_schedule: str = "none"
    carry_optimizer_state: bool = False
    final_epochs: int = 0
    baseline_seed: int | None = None

    def describe(self) -> dict:
        """The budget as plain values, for the report."""
        return {k: v for k, v in asdict(self).items() if k not in ("model", "splits")}

    def key(self) -> str:
        """A digest of everything that determines the baseline: its training settings, model and data."""
        training = [self.baseline_stages, self.solver, self.l2_regularization, self.batch]
        parts = [training, _builder_key(self.model), _builder_key(self.splits)]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _builder_key(builder: Callable) -> str:
    """A stable description of a function or ``functools.partial`` (no memory addresses; a module
    run with ``python -m`` is named by its import name, not ``__main__`` or, in a spawned worker,
    ``__mp_main__``)."""
    if isinstance(builder, functools.partial):
        return f"{_builder_key(builder.func)}{builder.args}{sorted(builder.keywords.items())}"
    module = builder.__module__
    if module in ("__main__", "__mp_main__"):  # run with -m, or that module in a --jobs worker
        spec = getattr(sys.modules[module], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}.{builder.__qualname__}"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_options(task: Task, seed: int, learn_rate: float, epochs: int, **extra) -> TrainingOptions:
    return TrainingOptions(
        solver=task.solver,
        initial_learn_rate=learn_rate,
        l2_regularization=task.l2_regularization,
        mini_batch_size=task.batch,
        max_epochs=epochs,
        device=device().type,
        seed=seed,
        **extra,
    )


def finetune_options(task: Task, seed: int, **extra) -> TrainingOptions:
    """The fine-tuning settings every pruning method gets per pruning iteration."""
    extra = {
        "learn_rate_schedule": task.finetune_schedule,
        "carry_optimizer_state": task.carry_optimizer_state,
        **extra,
    }
    return training_options(task, seed, task.finetune_learn_rate, task.finetune_epochs, **extra)


def final_tune(task: Task, seed: int, model: nn.Module) -> None:
    """compress_network's final fine-tuning, for a peer's pruned network: ``task.final_epochs`` of
    cosine-annealed training from the fine-tuning learn rate to 0, in place."""
    if task.final_epochs:
        learn_rate, epochs = task.finetune_learn_rate, task.final_epochs
        options = training_options(task, seed, learn_rate, epochs, learn_rate_schedule="cosine")
        train_network(model, task.splits()[0], "crossentropy", options)


def retrain(task: Task, seed: int, model: nn.Module) -> dict:
    """The task's retraining of a pruned network, in place. Returns the test accuracy before it
    and its seconds (nothing when the task has no ``retrain_epochs``)."""
    if not task.retrain_epochs:
        return {}
    before = test_accuracy(task, model)
    options = training_options(
        task,
        seed,
        task.finetune_learn_rate,
        task.retrain_epochs,
        learn_rate_schedule="piecewise",
        learn_rate_drop_period=task.retrain_drop_period,
    )
    start = time.perf_counter()
    train_network(model, task.splits()[0], "crossentropy", options)
    return {"test_accuracy_before_retrain": before, "retrain_seconds": time.perf_counter() - start}


def test_accuracy(task: Task, model: nn.Module) -> float:
    options = TrainingOptions(mini_batch_size=256, device=device().type)
    test = as_loader(task.splits()[2], options, train=False)
    return evaluate(model.to(device()), test, resolve_loss("crossentropy"), ["accuracy"], device())["accuracy"]


@cache
def baseline(task: Task, seed: int) -> tuple[dict, float, float]:
    """Trained baseline weights, test accuracy and training seconds for ``seed``.

    Trained once and cached on disk under ``BASELINE_CACHE`` (keyed by :meth:`Task.key`) by the sweep's
    mechanism (:func:`sweeps.baseline.trained_once`), and in the process, so the anchor, the ablation and the
    peer comparison start from the same trained network. The task's ``baseline_seed``, when set, replaces
    ``seed``.
    """
    seed = seed if task.baseline_seed is None else task.baseline_seed

    def train() -> tuple[nn.Module, dict[str, float]]:
        torch.manual_seed(seed)
        model = task.model()
        start = time.perf_counter()
        for learn_rate, epochs in task.baseline_stages:
            if epochs:
                train_network(model, task.splits()[0], "crossentropy", training_options(task, seed, learn_rate, epochs))
        seconds = time.perf_counter() - start
        return model, {"test_accuracy": test_accuracy(task, model), "seconds": seconds}

    weights, record, _ = trained_once(BASELINE_CACHE, f"baseline-seed{seed}-{task.key()}", train)
    return torch.load(weights, weights_only=True), record["test_accuracy"], record["seconds"]


def trained_model(task: Task, seed: int) -> nn.Module:
    """A fresh copy of the seed's baseline network."""
    model = task.model()
    model.load_state_dict(baseline(task, seed)[0])
    return model


def example_input(task: Task) -> torch.Tensor:
    """One training input with its batch dimension, on the benchmark device."""
    loader = as_loader(task.splits()[0], TrainingOptions(mini_batch_size=1, device="cpu"), train=False)
    return next(iter(loader))[0].to(device())


def outcome(task: Task, seed: int, goal: float, criterion: str, pruned: nn.Module) -> dict:
    """The fields every run reports: its settings and the test accuracy before and after pruning."""
    return {
        "seed": seed,
        "goal": goal,
        "criterion": criterion,
        "baseline_test_accuracy": baseline(task, seed)[1],
        "pruned_test_accuracy": test_accuracy(task, pruned),
    }


def prune_run(task: Task, seed: int, goal: float, criterion: str) -> dict:
    """One compress_network run (then the task's retraining) from the seed's baseline; test
    accuracy before and after."""
    model = trained_model(task, seed)
    train, val, _ = task.splits()
    options = finetune_options(task, seed, validation_data=val, validation_frequency=10**9)
    start = time.perf_counter()
    pruned, info = compress_network(
        model,
        train,
        "crossentropy",
        options,
        learnables_reduction_goal=goal,
        learnables_reduction_increment=task.increment,
        criterion=criterion,
        group_reduction=task.group_reduction,
        final_fine_tuning_epochs=task.final_epochs,
        verbosity_level="off",
    )
    seconds = time.perf_counter() - start
    retrained = retrain(task, seed, pruned)
    history = info.pruning_history
    loop_rows = history[history["phase"] == "prune"]
    return {
        **outcome(task, seed, goal, criterion, pruned),
        **retrained,
        "original_learnables": info.original_learnables,
        "learnables": info.learnables,
        "reduction": info.reduction,
        "pruning_iterations": info.pruning_iterations,
        "val_accuracy_after_loop": float(loop_rows["val_accuracy"].iloc[-1]),
        "val_accuracy_final": float(history["val_accuracy"].iloc[-1]),
        "layer_widths": layer_widths(pruned),
        "seconds": seconds + retrained.get("retrain_seconds", 0.0),
    }


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels (convs) or features (linears) of every such layer, by module name."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
    return widths


def oneshot_run(task: Task, seed: int, goal: float, criterion: str) -> dict:
    """Prune the seed's baseline once to the goal, without fine-tuning: the criterion alone decides.

    Taylor scores are accumulated over up to ``task.scoring_batches`` training mini-batches
    (model in train mode, no weight updates).
    """
    model = trained_model(task, seed).to(device())
    train = task.splits()[0]
    loader = as_loader(train, finetune_options(task, seed), train=True)
    pnet = TaylorPrunableNetwork(model, example_input(task), criterion=criterion, group_reduction=task.group_reduction)
    torch.manual_seed(seed)
    if criterion == "taylor":
        pnet.train()
        loss = resolve_loss("crossentropy")
        for i, (x, y) in enumerate(loader):
            if i >= task.scoring_batches:
                break
            out, acts = pnet.forward_with_activations(x.to(device()))
            pnet.update_score(acts, torch.autograd.grad(loss(out, y.to(device())), acts))
    pnet.prune_to_learnables(int(pnet.learnables * (1 - goal)))
    pruned = pnet.to_module().eval()
    return {
        **outcome(task, seed, goal, criterion, pruned),
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


Run = Callable[[Task, int, float, str], dict]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning recipe's flags: schedule per iteration, final fine-tuning, optimizer state."""
    parser.add_argument(
        "--schedule", choices=("none", "cosine"), default=None, help="learn-rate schedule per pruning iteration"
    )
    parser.add_argument("--final-epochs", type=int, default=None, help="compress_network's final fine-tuning epochs")
    parser.add_argument(
        "--carry", action="store_true", help="carry the optimizer's state across pruning steps (default: fresh)"
    )


def with_recipe(task: Task, args: argparse.Namespace) -> Task:
    """``task`` with the recipe flags applied; its name gains ``_cos``, ``_final<N>``, ``_carry``."""
    if args.schedule is not None and args.schedule != task.finetune_schedule:
        task = replace(task, name=f"{task.name}_{args.schedule[:3]}", finetune_schedule=args.schedule)
    if args.final_epochs is not None and args.final_epochs != task.final_epochs:
        task = replace(task, name=f"{task.name}_final{args.final_epochs}", final_epochs=args.final_epochs)
    if args.carry and not task.carry_optimizer_state:
        task = replace(task, name=f"{task.name}_carry", carry_optimizer_state=True)
    return task


def run_all(run: Run, task: Task, cases: list[tuple[int, float, str]], jobs: int = 1) -> list[dict]:
    """``run(task, seed, goal, criterion)`` for every case, in ``jobs`` processes at a time.

    Worker processes keep the parent's torch thread count; results come back in case order.
    """
    if jobs == 1:
        return [run(task, *case) for case in cases]
    context = multiprocessing.get_context("spawn")
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        return list(pool.map(run, [task] * len(cases), *zip(*cases, strict=True)))


def anchor(task: Task, seeds: list[int], jobs: int = 1) -> dict:
    """compress_network to the task's anchor goal from each seed's baseline."""
    rows = run_all(prune_run, task, [(seed, task.anchor_goal, "taylor") for seed in seeds], jobs)
    s = summarize(rows)
    print(
        f"reduction >= {100 * s['reduction_min']:.1f}%, test accuracy {s['baseline_mean']:.2f}% -> "
        f"{s['pruned_mean']:.2f}% (drop {s['drop_mean']:.2f} +- {s['drop_std']:.2f} points, {s['runs']} seeds)"
    )
    baselines = {seed: {"test_accuracy": baseline(task, seed)[1], "seconds": baseline(task, seed)[2]} for seed in seeds}
    return {"runs": rows, "baselines": baselines, "summary": s}


def ablation(
    task: Task,
    seeds: list[int],
    run: Run,
    jobs: int = 1,
    criteria: Sequence[str] = CRITERIA,
    goals: Sequence[float] = GOALS,
) -> dict:
    """``run`` for every goal in ``goals``, criterion in ``criteria`` and seed: the accuracy-vs-reduction curves."""
    cases = [(seed, goal, criterion) for goal in goals for criterion in criteria for seed in seeds]
    rows = run_all(run, task, cases, jobs)
    curves = {
        f"{criterion}@{goal}": summarize([r for r in rows if r["criterion"] == criterion and r["goal"] == goal])
        for goal in goals
        for criterion in criteria
    }
    for key, s in curves.items():
        print(f"{key:12s} test accuracy {s['pruned_mean']:.2f}% (drop {s['drop_mean']:.2f} +- {s['drop_std']:.2f})")
    return {"runs": rows, "summary": curves}


def main(budgets: dict[str, Callable[[], Task]], doc: str, argv: list[str] | None = None) -> dict:
    """The command line of a task module: ``anchor``, ``ablation`` or ``oneshot``.

    ``budgets`` maps budget names to task builders; the first is the default and ``"smoke"``
    (``--smoke``: one seed, no report) must be one of them.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("experiment", choices=("anchor", "ablation", "oneshot"))
    parser.add_argument("--budget", choices=list(budgets), default=next(iter(budgets)))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--jobs", type=int, default=1, help="runs (seeds, criteria, goals) in parallel processes")
    parser.add_argument(
        "--group-reduction",
        choices=GROUP_REDUCTIONS,
        default="sum",
        help="how the engine combines a coupled group's layer scores (not sum: reports named <task>_group_<it>_...)",
    )
    parser.add_argument(
        "--criteria",
        nargs="+",
        choices=CRITERIA,
        default=list(CRITERIA),
        help="the criteria an ablation or oneshot runs (not all: reports named <task>_<criteria>_<experiment>)",
    )
    parser.add_argument("--goals", type=float, nargs="+", default=list(GOALS), help="an ablation's reductions")
    parser.add_argument("--goal", type=float, default=None, help="the anchor's goal (default: the task's)")
    add_recipe_arguments(parser)
    parser.add_argument(
        "--baseline-seed", type=int, default=None, help="every run starts from this seed's baseline (name: _base<N>)"
    )
    parser.add_argument("--name", default=None, help="the report's name (default: built from the task and flags)")
    parser.add_argument("--smoke", action="store_true", help="the same as --budget smoke --seeds 1, no report")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    smoke = args.smoke or args.budget == "smoke"
    task = budgets["smoke" if smoke else args.budget]()
    if args.group_reduction != "sum":
        task = replace(task, name=f"{task.name}_group_{args.group_reduction}", group_reduction=args.group_reduction)
    task = with_recipe(task, args)
    if args.goal is not None:
        task = replace(task, name=f"{task.name}_goal{round(100 * args.goal)}", anchor_goal=args.goal)
    if args.baseline_seed is not None:
        task = replace(task, name=f"{task.name}_base{args.baseline_seed}", baseline_seed=args.baseline_seed)
    seeds = [0] if smoke else list(range(args.seeds))
    if args.experiment == "anchor":
        results = anchor(task, seeds, args.jobs)
    else:
        run = prune_run if args.experiment == "ablation" else oneshot_run
        results = ablation(task, seeds, run, args.jobs, args.criteria, args.goals)
    results = {"budget": task.describe(), **results}
    subset = "" if args.experiment == "anchor" or set(args.criteria) == set(CRITERIA) else "_".join(args.criteria) + "_"
    if args.experiment != "anchor" and list(args.goals) != list(GOALS):
        subset += "curve_"
    if not smoke:
        write_report(args.name or f"{task.name}_{subset}{args.experiment}", device(), results)
    return results
