"""Scaling of one trial over Ray Train workers: 1 against 2 CPU workers (issue 20 target).

Per seed, the same one-trial sweep on MNIST-1D (one cached baseline) with ``ray.workers_per_trial`` 1 and 2, one
CPU and one thread per worker, the same global mini-batch. The throughput is the trial's optimizer steps (its
logged mini-batches) per second of its ``compress_seconds`` (pruning and fine-tuning, reporting excluded); the
trial's whole time (``trial_seconds``: with Ray Train's worker start) and the sweep's wall time are reported too.

    python -m bench.worker_scaling                 # 3 seeds: bench/results/worker_scaling.json
    python -m bench.worker_scaling --batch 512     # a 4x larger global mini-batch: worker_scaling_batch512.json
    python -m bench.worker_scaling --smoke         # 1 seed on the tests' tiny digits: worker_scaling_smoke.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mlflow
import ray
import torch

from bench.sweep_overhead import config
from sweeps.runner import run_sweep

TASK = ["model=mnist1d_cnn", "data=mnist1d", "sweep=single"]
SMOKE_TASK = ["+experiment=debug"]
COMMON = ["tracking.log_models=false", "ray.cpus_per_trial=1", "ray.cpus_per_worker=1"]


def run_trial(output_dir: Path, task: list[str], seed: int, workers: int) -> dict:
    """One one-trial sweep; the trial's steps, times and final accuracy."""
    name = f"workers{workers}_seed{seed}"
    cfg = config(
        output_dir, *task, *COMMON, f"ray.workers_per_trial={workers}", f"sweep.seeds=[{seed}]", f"name={name}"
    )
    start = time.perf_counter()
    outcome = run_sweep(cfg)
    wall = time.perf_counter() - start
    client = mlflow.MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name(name).experiment_id
    [run] = client.search_runs([experiment], filter_string="tags.`prune_sweep.role` = 'trial'")
    steps = len(client.get_metric_history(run.info.run_id, "train_loss"))
    metrics = run.data.metrics
    return {
        "seed": seed,
        "workers": workers,
        "steps": steps,
        "compress_s": metrics["compress_seconds"],
        "trial_s": metrics["trial_seconds"],
        "sweep_wall_s": wall,
        "steps_per_s": steps / metrics["compress_seconds"],
        "final_val_accuracy": metrics["final_val_accuracy"],
        "final_learnables": metrics["final_learnables"],
    }


def main(argv: list[str] | None = None) -> dict:
    from bench.common import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 seed on the tests' tiny digits")
    parser.add_argument("--batch", type=int, default=None, help="the global mini-batch (default: the task's)")
    args = parser.parse_args(argv)
    seeds, task = (1, SMOKE_TASK) if args.smoke else (args.seeds, TASK)
    if args.batch:
        task = [*task, f"finetune.mini_batch_size={args.batch}"]
    ray.init(num_cpus=2, include_dashboard=False)
    runs = []
    with tempfile.TemporaryDirectory(prefix="worker-scaling-") as folder:
        for seed in range(seeds):
            for workers in (1, 2):
                runs.append(run_trial(Path(folder), task, seed, workers))
                print(f"seed {seed}, {workers} worker(s): {runs[-1]['steps_per_s']:.2f} steps/s")
    ray.shutdown()
    ratios = []
    for seed in range(seeds):
        one, two = (next(r for r in runs if r["seed"] == seed and r["workers"] == w) for w in (1, 2))
        ratios.append({"seed": seed, "throughput_ratio": two["steps_per_s"] / one["steps_per_s"]})
        ratios[-1]["trial_time_ratio"] = two["trial_s"] / one["trial_s"]
    results = {"task": task, "runs": runs, "ratios": ratios}
    name = "worker_scaling_smoke" if args.smoke else "worker_scaling"
    write_report(f"{name}_batch{args.batch}" if args.batch else name, torch.device("cpu"), results)
    return results


if __name__ == "__main__":
    main()
