"""Cold analysis time: ``TaylorPrunableNetwork`` on a model of the prunability matrix, first call in a fresh
process, one thread, several runs alternating over the models; prints each model's runs and median.

    python -m bench.analysis_time timm:maxvit_tiny_tf_224 timm:darknet53 --runs 3

Compare two versions of the engine by running it with ``PYTHONPATH`` set to each checkout in turn.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from bench.coverage import build


def time_once(spec: str) -> float:
    """Seconds of one ``TaylorPrunableNetwork`` on ``spec`` (``source:name``), in this process."""
    from prune_core import TaylorPrunableNetwork

    torch.set_num_threads(1)
    model, shape = build(*spec.split(":"))
    x = torch.randn(shape)
    start = time.perf_counter()
    TaylorPrunableNetwork(model.eval(), x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="SOURCE:NAME")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.one:
        print(time_once(args.models[0]))
        return {}
    times: dict[str, list[float]] = {spec: [] for spec in args.models}
    for _ in range(args.runs):
        for spec in args.models:
            child = [sys.executable, "-m", "bench.analysis_time", spec, "--one"]
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
            times[spec].append(float(out.split()[-1]))
    for spec, runs in times.items():
        print(f"{spec}: median {statistics.median(runs):.2f} s ({', '.join(f'{t:.2f}' for t in runs)})")
    return times


if __name__ == "__main__":
    main()
