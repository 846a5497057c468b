"""Scaling of one trial over Ray Train workers: 1 against 2 CPU workers (issue 20 target).

Per seed, the same one-trial sweep on MNIST-1D (one cached baseline) with ``ray.workers_per_trial`` 1 and 2, one
CPU and one thread per worker, the same global mini-batch. The throughput is the trial's optimizer steps (its
logged mini-batches) per second of its ``compress_seconds`` (pruning and fine-tuning, reporting excluded); the
trial's whole time (``trial_seconds``: with Ray Train's worker start) and the sweep's wall time are reported too.

    python -m bench.worker_scaling                 # 3 seeds: bench/results/worker_scaling.json
    python -m bench.worker_scaling --name worker_scaling_b512_e8 \
        --set finetune.mini_batch_size=512 finetune.max_epochs=8   # 8x the mini-batch, 8 epochs per iteration
    python -m bench.worker_scaling --smoke         # 1 seed on the tests' tiny digits: worker_scaling_smoke.json
    python -m bench.worker_scaling --engine        # compress_network alone on 1 and 2 gloo ranks, no Ray, batches
                                                   # 64 and 512: worker_scaling_engine.json

The engine measurement runs MNIST-1D-shaped random tensors (8,192 sequences of length 40: throughput does not depend
on their values) through ``SequenceCNN`` with ``torch.multiprocessing`` ranks, one thread each, 3 repetitions.
"""

from __future__ import annotations

import argparse
import os
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


def _engine_steps_per_second(batch: int) -> float:
    from prune_core import TrainingOptions, compress_network
    from prune_core.models import SequenceCNN

    torch.manual_seed(0)
    inputs, targets = torch.randn(8192, 1, 40), torch.randint(0, 10, (8192,))
    options = TrainingOptions(mini_batch_size=batch, max_epochs=2, seed=0)
    start = time.perf_counter()
    _, info = compress_network(
        SequenceCNN(), (inputs, targets), "crossentropy", options, learnables_reduction_goal=0.3,
        learnables_reduction_increment=0.15, verbosity_level="off",
    )  # fmt: skip
    return len(info.training_history) / (time.perf_counter() - start)


def _engine_rank(rank: int, port: int, batch: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results[rank] = _engine_steps_per_second(batch)
    dist.destroy_process_group()


def engine_scaling(repetitions: int = 3) -> list[dict]:
    """compress_network's fine-tuning steps per second on one process and on two gloo ranks."""
    import torch.multiprocessing as mp

    from sweeps.cluster import free_port

    torch.set_num_threads(1)
    runs = []
    for repetition in range(repetitions):
        for batch in (64, 512):
            one = _engine_steps_per_second(batch)
            shared = mp.Manager().dict()
            mp.spawn(_engine_rank, args=(free_port(), batch, shared), nprocs=2)
            runs.append({"repetition": repetition, "batch": batch, "one_rank": one, "two_ranks": shared[0]})
            runs[-1]["throughput_ratio"] = shared[0] / one
            print(f"batch {batch}: {one:.1f} -> {shared[0]:.1f} steps/s ({runs[-1]['throughput_ratio']:.2f}x)")
    return runs


def main(argv: list[str] | None = None) -> dict:
    from bench.common import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 seed on the tests' tiny digits")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more overrides of the trial")
    parser.add_argument("--name", default=None, help="report name (default worker_scaling[_smoke])")
    parser.add_argument("--engine", action="store_true", help="compress_network alone on 1 and 2 gloo ranks")
    args = parser.parse_args(argv)
    if args.engine:
        results = {"runs": engine_scaling()}
        write_report("worker_scaling_engine", torch.device("cpu"), results)
        return results
    seeds, task = (1, SMOKE_TASK) if args.smoke else (args.seeds, TASK)
    task = [*task, *args.set]
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
    name = args.name or ("worker_scaling_smoke" if args.smoke else "worker_scaling")
    write_report(name, torch.device("cpu"), results)
    return results


if __name__ == "__main__":
    main()
