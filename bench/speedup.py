"""Real speed-ups: inference latency of pruned torchvision networks against their MACs reduction.

For resnet18 and mobilenet_v2, 50% of the prunable filters are removed (L1 ranking: which
filters go does not change the cost), the network is extracted with ``to_module`` and both
networks are timed (eval mode, batch 1 and 32, 224x224; the two run alternately and the latency
ratio is the median of the paired ratios, as in ``bench.scoring_overhead``). Target:
latency ratio (pruned / original) within 1.25x of the MACs ratio. The same learnables are then
reached with ``channel_multiple=m`` (every pruned layer keeps a multiple of m filters) for each
``--channel-multiples`` m and timed. ``--deployed`` times both networks as they would be served:
BatchNorm folded into the convs (``torch.fx.experimental.optimization.fuse``) and channels-last
memory format, the layout oneDNN's CPU convolutions are fastest in (MACs are the same).

    python -m bench.speedup                          # writes bench/results/speedup.json
    python -m bench.speedup --deployed               # writes bench/results/speedup_deployed.json
    python -m bench.speedup --channel-multiples 8    # only the multiples of 8
    python -m bench.speedup --smoke                  # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torchvision
from torch.fx.experimental.optimization import fuse

from bench.common import interleaved_times, median_paired_ratio, write_report
from bench.reports import speedup_variants
from prune_core import TaylorPrunableNetwork, network_metrics
from prune_core.metrics import learnable_parameters

MODELS = ("resnet18", "mobilenet_v2")


def prune_half(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """Remove 50% of the prunable filters (rounded down) and extract the smaller network."""
    pnet = TaylorPrunableNetwork(model, example, criterion="l1")
    remaining = pnet.num_prunables // 2
    while remaining > 0:
        remaining -= pnet.update_prunables(max_to_prune=min(remaining, 64))
    return pnet.to_module().eval()


def prune_rounded(model: torch.nn.Module, example: torch.Tensor, learnables: int, multiple: int) -> torch.nn.Module:
    """Prune to ``learnables`` with every pruned layer keeping a multiple of ``multiple`` filters."""
    pnet = TaylorPrunableNetwork(model, example, criterion="l1", channel_multiple=multiple)
    pnet.prune_to_learnables(learnables)
    return pnet.to_module().eval()


@torch.no_grad()
def paired_latency(
    model: torch.nn.Module,
    pruned: torch.nn.Module,
    x: torch.Tensor,
    repeats: int,
    device: torch.device,
    warmup: int = 3,
) -> tuple[float, float, float]:
    """Median latency (ms) of each network and the median of the paired ratios pruned / original.

    The two networks run alternately, so a drift of the machine's speed cancels in each pair.
    """
    model, pruned, x = model.to(device).eval(), pruned.to(device).eval(), x.to(device)
    times = interleaved_times({"original": lambda: model(x), "pruned": lambda: pruned(x)}, repeats, warmup, device)
    ratio = median_paired_ratio(times["pruned"], times["original"])
    return 1000 * statistics.median(times["original"]), 1000 * statistics.median(times["pruned"]), ratio


def deploy(model: torch.nn.Module) -> torch.nn.Module:
    """The network as served: BatchNorm folded into the convs, weights in channels-last format."""
    return fuse(model.eval()).to(memory_format=torch.channels_last)


def timings(
    model: torch.nn.Module,
    pruned: torch.nn.Module,
    original_macs: dict[int, int],
    size,
    repeats,
    device,
    served_model: torch.nn.Module | None = None,
) -> dict:
    """Latency and MACs of ``pruned`` against ``model``, per batch size (``original_macs``:
    ``model``'s MACs per batch size, see :func:`macs_per_batch`).

    ``served_model``: ``model`` through :func:`deploy`; when given, ``pruned`` is deployed too
    and the inputs are channels-last.
    """
    rows = {}
    deployed = served_model is not None
    served = (served_model, deploy(pruned)) if deployed else (model, pruned)
    layout = torch.channels_last if deployed else torch.contiguous_format
    for batch, model_macs in original_macs.items():
        x = torch.randn(batch, 3, size, size)
        macs_ratio = network_metrics(pruned, x, device, 1, 0).macs / model_macs
        original_ms, pruned_ms, latency_ratio = paired_latency(
            *served, x.contiguous(memory_format=layout), repeats, device
        )
        rows[f"batch_{batch}"] = {
            "original_latency_ms": original_ms,
            "pruned_latency_ms": pruned_ms,
            "macs_ratio": macs_ratio,
            "latency_ratio": latency_ratio,
            "latency_over_macs": latency_ratio / macs_ratio,
            "target_met": latency_ratio <= 1.25 * macs_ratio,
        }
    return {"learnables_ratio": learnable_parameters(pruned) / learnable_parameters(model), **rows}


def macs_per_batch(model: torch.nn.Module, batches: tuple[int, ...], size: int, device) -> dict[int, int]:
    """``model``'s MACs for each batch size (they do not depend on the input values: zeros, so the
    random inputs and networks that follow are the same as without this count)."""
    return {batch: network_metrics(model, torch.zeros(batch, 3, size, size), device, 1, 0).macs for batch in batches}


def measure(
    name: str,
    batches: tuple[int, ...],
    size: int,
    repeats: int,
    device: torch.device,
    multiples: list[int],
    deployed: bool = False,
) -> dict:
    """Half the filters removed; and the same learnables with channel counts in each of ``multiples``."""
    model = torchvision.models.get_model(name, weights=None).eval()
    example = torch.randn(1, 3, size, size)
    pruned = prune_half(model, example)
    learnables = learnable_parameters(pruned)
    cells = {"": pruned} | {f"channel_multiple_{m}": prune_rounded(model, example, learnables, m) for m in multiples}
    original_macs = macs_per_batch(model, batches, size, device)
    served_model = deploy(model) if deployed else None
    rows = {key: timings(model, net, original_macs, size, repeats, device, served_model) for key, net in cells.items()}
    return {**rows.pop(""), **rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--channel-multiples", type=int, nargs="*", default=[8, 16], metavar="M")
    parser.add_argument("--deployed", action="store_true", help="BatchNorm folded, channels-last (see above)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches, size, repeats = ((1, 2), 64, 2) if args.smoke else ((1, 32), 224, args.repeats)
    results = {
        name: measure(name, batches, size, repeats, device, args.channel_multiples, args.deployed) for name in MODELS
    }
    for name, row in results.items():
        for variant, cells in speedup_variants(row):
            for key, cell in cells.items():
                if key.startswith("batch_"):
                    times = f"{cell['original_latency_ms']:.1f} -> {cell['pruned_latency_ms']:.1f} ms"
                    print(
                        f"{name + variant:16s} {key:9s} MACs ratio {cell['macs_ratio']:.3f}  "
                        f"latency ratio {cell['latency_ratio']:.3f}  ({times})"
                    )
    if not args.smoke:
        name = "speedup" + ("" if device.type == "cpu" else "_gpu") + ("_deployed" if args.deployed else "")
        write_report(name, device, results)
    return {"benchmark": "speedup", "results": results}


if __name__ == "__main__":
    main()
