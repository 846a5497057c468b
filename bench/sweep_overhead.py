"""Sweep orchestration cost and concurrency: the embedded default sweep (6 trials) run with 2
concurrent trials and with 1, on the same machine, one after the other.

Orchestration cost per trial = (sweep wall time x concurrent trials - time spent inside
compress_network, summed over trials) / trials: every trial-slot second not spent pruning or
fine-tuning (Ray start-up, worker start, data and model building, MLflow runs, tables, plots and
model logging, idle slots), set against a 60 s trial. Throughput gain = wall time with 1 concurrent
trial / wall time with 2. The baseline is trained once beforehand (it is cached, as in real sweeps).

    python -m bench.sweep_overhead                        # bench/results/sweep_overhead.json
    python -m bench.sweep_overhead --finetune-epochs 20   # longer trials: sweep_overhead_epochs20.json

``--finetune-epochs`` sets ``finetune.max_epochs`` (1 in the default sweep, about 2 s of pruning per
trial), to see how the shares behave when the trials are closer to 60 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mlflow
import ray
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.common import write_report
from sweeps.cli import CONFIG_DIR
from sweeps.runner import run_sweep


def config(output_dir: Path, *overrides: str) -> dict:
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={output_dir}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def timed_sweep(output_dir: Path, concurrent: int, extra: list[str]) -> dict:
    cfg = config(output_dir, f"ray.max_concurrent_trials={concurrent}", f"name=concurrency{concurrent}", *extra)
    start, start_clock = time.perf_counter(), time.time()
    outcome = run_sweep(cfg)
    wall, end_clock = time.perf_counter() - start, time.time()
    ray.shutdown()
    runs = mlflow.MlflowClient(outcome.tracking_uri).search_runs(
        [mlflow.MlflowClient(outcome.tracking_uri).get_experiment_by_name(cfg["name"]).experiment_id],
        filter_string="tags.`prune_sweep.role` = 'trial'",
    )
    compress = [r.data.metrics["compress_seconds"] for r in runs]
    trials = [r.data.metrics["trial_seconds"] for r in runs]
    return {
        "concurrent": concurrent,
        "trials": len(runs),
        "failed": outcome.failed_trials,
        "wall_s": wall,
        "compress_s_mean": sum(compress) / len(compress),
        "trial_s_mean": sum(trials) / len(trials),
        "orchestration_s_per_trial": (wall * concurrent - sum(compress)) / len(runs),
        # sweep start -> first trial's MLflow run (Ray, the first worker, the driver's set-up), and
        # last trial's run end -> sweep end (the driver's summary)
        "startup_s": min(r.info.start_time for r in runs) / 1000 - start_clock,
        "wrapup_s": end_clock - max(r.info.end_time for r in runs) / 1000,
    }


def _null_trial(params: dict) -> None:
    from ray import tune

    tune.report({"done": 1})


def ray_floor(concurrent: int, trials: int) -> dict:
    """Wall time of ``ray.init`` and a Tune run of ``trials`` report-only trials, ``concurrent`` at a time."""
    from ray import tune

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        ray.init(include_dashboard=False)
        init = time.perf_counter() - start
        tuner = tune.Tuner(
            tune.with_resources(_null_trial, {"cpu": 1}),
            param_space={"index": tune.grid_search(list(range(trials)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=folder, verbose=0),
        )
        tuner.fit()
        wall = time.perf_counter() - start
        ray.shutdown()
    return {"ray_init_s": init, "wall_s": wall, "per_trial_s": wall * concurrent / trials}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-epochs", type=int, default=1, help="finetune.max_epochs of every trial")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    data = ["data.max_train_samples=96", "finetune.baseline_epochs=1"] if args.smoke else []
    data.append(f"finetune.max_epochs={args.finetune_epochs}")
    grid = ["sweep=single", "+sweep.grid.prune.learnables_reduction_increment=[0.3,0.6]"] if args.smoke else []
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder)
        if not args.smoke:  # train and cache the baseline first (the smoke test's takes a moment)
            run_sweep(config(output, "name=warmup", "sweep=single", *data))
            ray.shutdown()
        two = timed_sweep(output, 2, data + grid)
        one = timed_sweep(output, 1, data + grid)
    floor = {"two_concurrent": ray_floor(2, two["trials"]), "one_at_a_time": ray_floor(1, one["trials"])}
    results = {
        "finetune_epochs": args.finetune_epochs,
        "two_concurrent": two,
        "one_at_a_time": one,
        "throughput_gain": one["wall_s"] / two["wall_s"],
        "orchestration_share_of_60s_trial": two["orchestration_s_per_trial"] / 60.0,
        "ray_floor": floor,
        "above_ray_floor_s_per_trial": {
            key: run["orchestration_s_per_trial"] - floor[key]["per_trial_s"]
            for key, run in (("two_concurrent", two), ("one_at_a_time", one))
        },
    }
    print(
        f"{two['trials']} trials: {one['wall_s']:.1f} s one at a time, {two['wall_s']:.1f} s two at a time "
        f"(gain {results['throughput_gain']:.2f}x); orchestration {two['orchestration_s_per_trial']:.1f} s per trial "
        f"({100 * results['orchestration_share_of_60s_trial']:.1f}% of a 60 s trial); Ray's own floor "
        f"{floor['two_concurrent']['per_trial_s']:.1f} s per trial, ours above it "
        f"{results['above_ray_floor_s_per_trial']['two_concurrent']:.1f} s"
    )
    if not args.smoke:
        name = "sweep_overhead" if args.finetune_epochs == 1 else f"sweep_overhead_epochs{args.finetune_epochs}"
        write_report(name, torch.device("cpu"), results)
    return results


if __name__ == "__main__":
    main()
