"""network_metrics and compare_networks: size, compute and speed of a network, before and after pruning."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prune_core.checks import as_input_tuple, positive_int


@dataclass(frozen=True)
class NetworkMetrics:
    """Size and cost of one forward pass of a network on given inputs."""

    learnables: int
    parameter_memory_mb: float
    """Memory of the learnable parameters in MiB (2**20 bytes), as MATLAB's "MB"."""
    macs: int
    """Multiply-accumulates of one forward pass on the example inputs (all its samples)."""
    latency_ms: float
    """Median wall time of one forward pass on the example inputs."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def learnable_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` that require gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def network_metrics(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    device: str | torch.device | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> NetworkMetrics:
    """Learnables, parameter memory, MACs and median inference latency of ``model``.

    The model runs in eval mode under ``torch.no_grad`` on ``device`` (default: where its
    parameters are); its training mode is restored afterwards. MACs are counted with
    ``torch.utils.flop_counter`` (FLOPs / 2) over every convolution and matrix product.
    """
    positive_int("repeats", repeats)
    params = [p for p in model.parameters() if p.requires_grad]
    first = next(model.parameters(), None)
    original_device = first.device if first is not None else torch.device("cpu")
    device = original_device if device is None else torch.device(device)
    inputs = tuple(x.to(device) for x in as_input_tuple(example_inputs))
    was_training = model.training
    model.to(device).eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model(*inputs)
            _sync(device)
            times.append(time.perf_counter() - start)
    finally:
        model.to(original_device).train(was_training)
    return NetworkMetrics(
        learnables=learnable_parameters(model),
        parameter_memory_mb=sum(p.numel() * p.element_size() for p in params) / 2**20,
        macs=counter.get_total_flops() // 2,
        latency_ms=1000 * statistics.median(times),
    )


def compare_networks(
    original: nn.Module,
    pruned: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    accuracy: tuple[float, float] | None = None,
    device: str | torch.device | None = None,
    repeats: int = 20,
) -> pd.DataFrame:
    """Original vs pruned table (MATLAB's ``analyzeNetworkMetrics``) with a percentage-change row.

    Columns: learnables, parameter_memory_mb, macs, latency_ms and, when ``accuracy=(original,
    pruned)`` is given, accuracy. Rows: ``original``, ``pruned``, ``percentage_change``.
    """
    rows = {
        "original": network_metrics(original, example_inputs, device, repeats).as_dict(),
        "pruned": network_metrics(pruned, example_inputs, device, repeats).as_dict(),
    }
    if accuracy is not None:
        rows["original"]["accuracy"], rows["pruned"]["accuracy"] = accuracy
    table = pd.DataFrame.from_dict(rows, orient="index").astype(float)
    table.loc["percentage_change"] = 100 * (table.loc["pruned"] - table.loc["original"]) / table.loc["original"]
    return table
