"""What every benchmark report carries: the machine, versions, date; and where results go."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.figures import save_figure
from bench.reports import RESULTS


def machine(device: torch.device) -> dict:
    """The device, CPU count, torch threads and versions a figure was measured with."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": name,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), so timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each step in ``repeats`` rounds after ``warmup`` ones; every round runs the steps
    in turn, so a drift of the machine's speed hits them alike and pairs of them can be compared."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median_paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of the round-by-round ratios of two steps timed by :func:`interleaved_times`."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def write_report(name: str, device: torch.device, results: dict, out: Path | None = None) -> dict:
    """``{"benchmark": name, **machine, "results": results}`` written to ``bench/results/<name>.json``,
    and its figure (see :mod:`bench.figures`) next to it as ``<name>.png``."""
    report = {"benchmark": name, **machine(device), "results": results}
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    save_figure(report, path.with_suffix(".png"))
    return report
