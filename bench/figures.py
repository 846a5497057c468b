"""PNG figures of the benchmark reports: one per ``bench/results/<name>.json``, written next to it.

Every benchmark writes its figure when it writes its report; this command redraws them all from
the JSON files (or the ones named):

    python -m bench.figures                                   # every bench/results/*.json
    python -m bench.figures bench/results/speedup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.reports import RESULTS, speedup_variants

CRITERIA_COLORS = {"taylor": "tab:blue", "l1": "tab:orange", "random": "tab:gray"}
MATLAB_ANCHORS = {  # MATLAB's published examples (../shared/seeds/001_*, 003_*): reduction, accuracy drop
    "mnist1d": (0.796, None),
    "cifar10": (0.5536, 90.24 - 87.36),
}
MAX_DROP = 1.0  # the anchors' accuracy-drop target, in points


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def criterion_curves(runs: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """Per criterion: ``(goal, mean, std)`` of the pruned test accuracy over seeds, by goal."""
    accuracies: dict[str, dict[float, list[float]]] = {}
    for r in runs:
        accuracies.setdefault(r["criterion"], {}).setdefault(r["goal"], []).append(r["pruned_test_accuracy"])
    return {
        criterion: [(goal, *mean_std(by_goal[goal])) for goal in sorted(by_goal)]
        for criterion, by_goal in accuracies.items()
    }


def paired_differences(runs: list[dict], criterion: str, other: str) -> list[tuple[float, float, float]]:
    """``(goal, mean, std)`` over seeds of ``criterion``'s test accuracy minus ``other``'s, seed by seed.

    Both start from the same baseline in a seed, so the pairing removes the baselines' spread.
    """
    accuracy = {(r["criterion"], r["goal"], r["seed"]): r["pruned_test_accuracy"] for r in runs}
    points = []
    for goal in sorted({goal for (c, goal, _) in accuracy if c == criterion}):
        seeds = [s for (c, g, s) in accuracy if (c, g) == (criterion, goal) and (other, goal, s) in accuracy]
        if seeds:
            points.append((goal, *mean_std([accuracy[criterion, goal, s] - accuracy[other, goal, s] for s in seeds])))
    return points


def _errorbar(ax: Axes, points: list[tuple[float, float, float]], **style) -> None:
    goals, means, stds = zip(*points, strict=True)
    ax.errorbar([100 * g for g in goals], means, yerr=stds, marker="o", capsize=4, **style)


def criteria_figure(report: dict) -> Figure:
    """Ablation / one-shot: accuracy against reduction per criterion, and Taylor's paired lead
    (that panel only when the report has Taylor and another criterion)."""
    runs = report["results"]["runs"]
    leads = {other: paired_differences(runs, "taylor", other) for other in ("l1", "random")}
    leads = {other: points for other, points in leads.items() if points}
    fig = Figure(figsize=(11 if leads else 6, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if leads else 1, squeeze=False)[0]
    curve_ax = axes[0]
    for criterion, points in criterion_curves(runs).items():
        _errorbar(curve_ax, points, label=criterion, color=CRITERIA_COLORS.get(criterion))
    curve_ax.axhline(statistics.mean(r["baseline_test_accuracy"] for r in runs), color="k", ls="--", label="baseline")
    curve_ax.set(xlabel="Learnables reduction goal (%)", ylabel="Test accuracy (%)", title="Mean +- std over seeds")
    if leads:
        lead_ax = axes[1]
        for other, points in leads.items():
            _errorbar(lead_ax, points, label=f"taylor - {other}", color=CRITERIA_COLORS[other])
        lead_ax.axhline(0.0, color="k", lw=0.8)
        lead_ax.set(xlabel="Learnables reduction goal (%)", ylabel="Accuracy difference (points)")
        lead_ax.set_title("Taylor's lead, paired by seed (same baseline)")
    for ax in axes:
        ax.grid(True)
        ax.legend()
    fig.suptitle(report["benchmark"])
    return fig


def anchor_figure(report: dict) -> Figure:
    """Anchor: each seed's reduction and accuracy drop, the target region and MATLAB's published point."""
    runs = report["results"]["runs"]
    goal = report["results"]["budget"].get("anchor_goal", runs[0]["goal"])
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    drops = [r["baseline_test_accuracy"] - r["pruned_test_accuracy"] for r in runs]
    reduction, drop = MATLAB_ANCHORS[report["benchmark"].split("_")[0]]
    bottom, top = min([*drops, 0.0]) - 0.5, max([*drops, MAX_DROP, drop or 0.0]) + 0.5
    ax.scatter([100 * r["reduction"] for r in runs], drops, label="ours (one point per seed)", zorder=3)
    target = f"target: >= {100 * goal:.0f}% fewer, drop <= {MAX_DROP}"
    ax.fill_between([100 * goal, 100], bottom, MAX_DROP, color="tab:green", alpha=0.15, label=target)
    if drop is None:
        ax.axvline(100 * reduction, color="tab:red", ls=":", label=f"MATLAB: {100 * reduction:.1f}% fewer")
    else:
        ax.scatter([100 * reduction], [drop], marker="*", s=200, color="tab:red", label="MATLAB's example")
    ax.set(xlim=(100 * goal - 10, 100), ylim=(bottom, top))
    ax.set(xlabel="Learnables reduction (%)", ylabel="Test accuracy drop (points)", title=report["benchmark"])
    ax.grid(True)
    ax.legend(fontsize="small")
    return fig


def peer_figure(report: dict) -> Figure:
    """Peer: test accuracy and wall time per seed, ours against Torch-Pruning."""
    runs = report["results"]["runs"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    acc_ax, time_ax = fig.subplots(1, 2)
    width = 0.38
    for offset, tool, label in ((-width / 2, "ours", "ours"), (width / 2, "torch_pruning", "Torch-Pruning")):
        seeds = [r["seed"] + offset for r in runs]
        acc_ax.bar(seeds, [r[tool]["pruned_test_accuracy"] for r in runs], width, label=label)
        time_ax.bar(seeds, [r[tool]["seconds"] for r in runs], width, label=label)
    acc_ax.plot([r["seed"] for r in runs], [r["baseline_test_accuracy"] for r in runs], "k_", ms=30, label="baseline")
    low = min(min(r[t]["pruned_test_accuracy"] for t in ("ours", "torch_pruning")) for r in runs)
    acc_ax.set(ylim=(low - 5, None), xlabel="Seed", ylabel="Test accuracy (%)")
    time_ax.set(xlabel="Seed", ylabel="Wall time (s)")
    for ax in (acc_ax, time_ax):
        ax.set_xticks([r["seed"] for r in runs])
        ax.legend(loc="lower right")
    fig.suptitle(f"{report['benchmark']}: {100 * report['results']['goal']:.0f}% fewer learnables")
    return fig


def scoring_figure(report: dict) -> Figure:
    """Scoring overhead: the scoring step over the plain step per network, against the 1.10 target."""
    rows = report["results"]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(list(rows), [row["ratio"] for row in rows.values()])
    ax.axhline(1.10, color="tab:red", ls="--", label="target 1.10")
    ax.set(ylim=(0.9, None), ylabel="Scoring step / plain step", title=f"Scoring overhead ({report['device']})")
    ax.legend()
    return fig


def speedup_figure(report: dict) -> Figure:
    """Speed-ups: latency ratio against MACs ratio for every network, batch and rounding."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    for name, row in report["results"].items():
        for (variant, cells), marker in zip(speedup_variants(row), "osD^v", strict=False):
            for key, cell in cells.items():
                if key.startswith("batch_"):
                    label = f"{name}{variant}, batch {key.removeprefix('batch_')}"
                    ax.scatter(cell["macs_ratio"], cell["latency_ratio"], marker=marker, label=label)
    line = [0.0, 1.1]
    ax.plot(line, line, color="k", lw=0.8, label="latency = MACs")
    ax.plot(line, [1.25 * x for x in line], color="tab:red", ls="--", label="target: 1.25 x MACs")
    ax.set(xlim=(0.4, 1.0), ylim=(0.4, 1.1), xlabel="MACs ratio (pruned / original)")
    ax.set(ylabel="Latency ratio (pruned / original)", title=f"{report['benchmark']} ({report['device']})")
    ax.grid(True)
    ax.legend(fontsize="x-small")
    return fig


def sweep_figure(report: dict) -> Figure:
    """Sweep overhead: orchestration per trial (Ray's own floor + ours) at both concurrencies, against 3 s."""
    results = report["results"]
    modes = ("two_concurrent", "one_at_a_time")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    floor = [results["ray_floor"][m]["per_trial_s"] for m in modes]
    ours = [results["above_ray_floor_s_per_trial"][m] for m in modes]
    labels = [f"{m}\n(compress_network {results[m]['compress_s_mean']:.1f} s)" for m in modes]
    ax.bar(labels, floor, label="Ray's own floor (ray.init + null trials)")
    ax.bar(labels, ours, bottom=floor, label="ours above the floor")
    ax.axhline(3.0, color="tab:red", ls="--", label="target: 3 s (5% of a 60 s trial)")
    title = f"{report['benchmark']} (finetune.max_epochs={results['finetune_epochs']})"
    ax.set(ylabel="Orchestration seconds per trial", title=title)
    ax.legend(fontsize="small")
    return fig


def recipes_figure(report: dict) -> Figure:
    """Recipes: each arm's test accuracy per seed, and its gain over the first arm, paired by seed."""
    arms = report["results"]["arms"]
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    acc_ax, gain_ax = fig.subplots(1, 2)
    labels = [a["benchmark"].removesuffix("_anchor") + f"\n{a['fine_tuning_epochs']:.0f} epochs" for a in arms]
    for i, a in enumerate(arms):
        acc_ax.scatter([i] * len(a["accuracy"]), a["accuracy"], color="tab:blue", alpha=0.6, zorder=3)
        acc_ax.errorbar([i], [a["accuracy_mean"]], [a["accuracy_std"]], fmt="_", ms=25, color="k", capsize=4)
    gain_ax.bar(range(len(arms)), [a["paired_gain_mean"] for a in arms], yerr=[a["paired_gain_se"] for a in arms])
    gain_ax.axhline(0, color="k", lw=0.8)
    acc_ax.set(ylabel="Pruned test accuracy (%): seeds, mean +- std", title=report["benchmark"])
    gain_ax.set(ylabel=f"Gain over {report['results']['reference']} (points, +- s.e.)")
    for ax in (acc_ax, gain_ax):
        ax.set_xticks(range(len(arms)), labels, fontsize="x-small", rotation=15)
        ax.grid(True, axis="y")
    return fig


def coverage_figure(report: dict) -> Figure:
    """Share of models passing each check per source, and the maximum reduction of every model."""
    from bench.coverage import CHECKS, totals

    records = report["results"]["records"]
    counted = totals(records)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    share_ax, reduction_ax = fig.subplots(1, 2)
    width = 0.8 / max(1, len(counted))
    for i, (source, counts) in enumerate(counted.items()):
        shares = [100 * counts[check] / max(1, counts["models"]) for check in CHECKS]
        share_ax.bar([j + i * width for j in range(len(CHECKS))], shares, width, label=f"{source} ({counts['models']})")
        ran = sorted((r["max_reduction"] or 0) for r in records if r["source"] == source and r["outcome"] != "skipped")
        reduction_ax.plot(range(len(ran)), [100 * v for v in ran], marker=".", linestyle="none", label=source)
    share_ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(CHECKS))], list(CHECKS), fontsize="x-small", rotation=15
    )
    share_ax.set_ylabel("% of models")
    share_ax.legend(fontsize="small")
    reduction_ax.axhline(50, color="gray", linestyle=":")
    reduction_ax.set_xlabel("models, sorted")
    reduction_ax.set_ylabel("maximum learnables reduction (%)")
    reduction_ax.legend(fontsize="small")
    for ax in (share_ax, reduction_ax):
        ax.grid(True, axis="y")
    return fig


ARM_STYLES = {
    "grid": ("tab:gray", "s"),
    "search": ("tab:blue", "o"),
    "search_asha": ("tab:orange", "^"),
    "search_seeded": ("tab:green", "D"),
}


def search_figure(report: dict) -> Figure:
    """Search against grid: per seed, every arm's trials (faint) and front (line), hypervolumes in the legend."""
    runs = report["results"]["runs"]
    seeds = sorted({run["seed"] for run in runs})
    figure = Figure(figsize=(4.5 * len(seeds), 4), layout="constrained")
    for ax, seed in zip(figure.subplots(1, len(seeds), squeeze=False)[0], seeds, strict=True):
        for run in (r for r in runs if r["seed"] == seed):
            color, marker = ARM_STYLES.get(run["arm"], ("k", "x"))
            trials, front = run["trials"], run["front"]
            ax.scatter(
                [p["learnables"] for p in trials],
                [p["val_accuracy"] for p in trials],
                c=color,
                alpha=0.3,
                marker=marker,
            )
            label = f"{run['arm']} (HV {run['hypervolume']:.4f}, {run['seconds']:.0f} s)"
            ax.step(
                [p["learnables"] for p in front],
                [p["val_accuracy"] for p in front],
                where="post",
                c=color,
                marker=marker,
                label=label,
            )
        ax.set(title=f"seed {seed}", xlabel="learnables", ylabel="validation accuracy (%)", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def worker_scaling_figure(report: dict) -> Figure:
    """Trials over several workers: the throughput of 2 workers over 1's, per repetition (by mini-batch for the
    engine alone, per seed for whole trials), against the ideal 2."""
    results = report["results"]
    runs = results["runs"]
    if "batch" in runs[0]:  # the engine alone
        batches = sorted({run["batch"] for run in runs})
        groups = {f"mini-batch {b}": [run["throughput_ratio"] for run in runs if run["batch"] == b] for b in batches}
    else:
        groups = {"whole trials": [ratio["throughput_ratio"] for ratio in results["ratios"]]}
    figure = Figure(figsize=(5, 4), layout="constrained")
    ax = figure.subplots()
    for position, values in enumerate(groups.values()):
        ax.scatter([position] * len(values), values, color="tab:blue", zorder=3)
    ax.axhline(2.0, color="tab:green", ls="--", label="ideal (2 cores)")
    ax.axhline(1.0, color="k", lw=0.8, label="no gain")
    ax.set(xticks=range(len(groups)), xticklabels=list(groups), ylabel="throughput, 2 workers / 1 worker")
    ax.set(xlim=(-0.5, len(groups) - 0.5), ylim=(0, 2.3), title=report["benchmark"])
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def figure_maker(benchmark: str) -> Callable[[dict], Figure] | None:
    """The figure function for a benchmark name, or None for one without a figure."""
    if benchmark.endswith(("_ablation", "_oneshot")):
        return criteria_figure
    if benchmark.endswith("_anchor"):
        return anchor_figure
    if benchmark.endswith("_recipes"):
        return recipes_figure
    prefixes = {
        "peer_torch_pruning": peer_figure,
        "scoring_overhead": scoring_figure,
        "speedup": speedup_figure,
        "sweep_overhead": sweep_figure,
        "coverage": coverage_figure,
        "search_vs_grid": search_figure,
        "worker_scaling": worker_scaling_figure,
    }
    return next((make for prefix, make in prefixes.items() if benchmark.startswith(prefix)), None)


def save_figure(report: dict, path: Path) -> Path | None:
    """Draw ``report``'s figure to ``path`` (a PNG); None if its benchmark has no figure."""
    make = figure_maker(report["benchmark"])
    if make is None:
        return None
    make(report).savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="*", type=Path, help="JSON reports (default: every bench/results/*.json)")
    args = parser.parse_args(argv)
    written = []
    for path in args.reports or sorted(RESULTS.glob("*.json")):
        png = save_figure(json.loads(path.read_text()), path.with_suffix(".png"))
        print(f"{path} -> {png or 'no figure for this benchmark'}")
        written += [png] if png else []
    return written


if __name__ == "__main__":
    main()
