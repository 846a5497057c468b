"""Cost of Taylor score accumulation relative to a plain training step of the same masked network.

Both steps run on the same TaylorPrunableNetwork (with 30% of its filters masked), interleaved,
and the median of the paired ratios (scoring step / the plain step right before it) is reported,
which cancels slow drifts of the machine. Target: <= 1.10.

    python -m bench.scoring_overhead            # full run, writes bench/results/scoring_overhead.json
    python -m bench.scoring_overhead --smoke    # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from bench.common import interleaved_times, machine, median_paired_ratio, write_report
from prune_core import TaylorPrunableNetwork
from prune_core.models import DigitsCNN, SequenceCNN


def cases(smoke: bool) -> dict[str, tuple]:
    if smoke:
        return {"digits_cnn": (DigitsCNN(), (8, 1, 8, 8))}
    return {
        "digits_cnn": (DigitsCNN(), (128, 1, 8, 8)),
        "sequence_cnn": (SequenceCNN(), (128, 1, 40)),
        "resnet18": (torchvision.models.resnet18(num_classes=10), (32, 3, 32, 32)),
        "mobilenet_v2": (torchvision.models.mobilenet_v2(num_classes=10), (32, 3, 32, 32)),
    }


def plain_step(pnet, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(pnet(x), y).backward()
    opt.step()


def scoring_step(pnet, opt, x, y) -> None:
    """A fine-tuning step that also scores, as compress_network runs it."""
    opt.zero_grad(set_to_none=True)
    out, acts = pnet.forward_with_activations(x)
    pnet.score_on_backward(acts)
    F.cross_entropy(out, y).backward()
    opt.step()


def measure(model, shape, device: torch.device, repeats: int, warmup: int) -> dict:
    x = torch.randn(*shape, device=device)
    y = torch.randint(0, 10, (shape[0],), device=device)
    pnet = TaylorPrunableNetwork(model, x[:1].cpu(), criterion="l1").to(device).train()
    pnet.update_prunables(max_to_prune=max(1, int(0.3 * pnet.num_prunables)))
    pnet.criterion = "taylor"
    opt = torch.optim.SGD(pnet.parameters(), lr=1e-3, momentum=0.9)
    steps = {"plain": lambda: plain_step(pnet, opt, x, y), "scoring": lambda: scoring_step(pnet, opt, x, y)}
    times = interleaved_times(steps, repeats, warmup, device)
    plain, scoring = statistics.median(times["plain"]), statistics.median(times["scoring"])
    paired = median_paired_ratio(times["scoring"], times["plain"])
    return {"batch_shape": list(shape), "plain_ms": 1e3 * plain, "scoring_ms": 1e3 * scoring, "ratio": paired}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Taylor scoring overhead benchmark")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    repeats, warmup = (3, 1) if args.smoke else (args.repeats, 5)
    torch.manual_seed(0)
    rows = {name: measure(model, shape, device, repeats, warmup) for name, (model, shape) in cases(args.smoke).items()}
    report = {"benchmark": "scoring_overhead", **machine(device), "results": rows}
    for name, row in rows.items():
        print(f"{name:14s} plain {row['plain_ms']:8.2f} ms  scoring {row['scoring_ms']:8.2f} ms", end="  ")
        print(f"ratio {row['ratio']:.3f}")
    if not args.smoke:
        write_report("scoring_overhead", device, rows, args.out)
    return report


if __name__ == "__main__":
    main()
