"""Prune a small CNN on scikit-learn's digits with the custom Taylor pruning loop.

Run: ``prune-digits`` (or ``python -m prune_core.examples.digits``). Trains a baseline, then
alternates fine-tuning (accumulating Taylor scores on the same backward passes) and
``update_prunables``, and finally extracts the physically smaller network.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from prune_core import TaylorPrunableNetwork
from prune_core.data import load_digits_tensors
from prune_core.models import DigitsCNN


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100


def batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruning-iterations", type=int, default=12)
    parser.add_argument("--max-to-prune", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train, x_val, y_val = load_digits_tensors(seed=args.seed)
    model = DigitsCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(8):
        model.train()
        for idx in batches(len(y_train), 64, gen):
            opt.zero_grad()
            F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    base_acc = accuracy(model, x_val, y_val)

    pnet = TaylorPrunableNetwork(model, x_train[:2])
    start = pnet.learnables
    print(f"baseline: {start} learnables, validation accuracy {base_acc:.1f}%, {pnet.num_prunables} prunable filters")
    opt = torch.optim.SGD(pnet.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    for it in range(1, args.pruning_iterations + 1):
        pnet.train()
        for idx in batches(len(y_train), 64, gen):
            out, acts = pnet.forward_with_activations(x_train[idx])
            for act in acts:
                act.retain_grad()
            opt.zero_grad()
            F.cross_entropy(out, y_train[idx]).backward()
            opt.step()
            pnet.update_score(acts, [act.grad for act in acts])
        removed = pnet.update_prunables(max_to_prune=args.max_to_prune)
        print(
            f"iteration {it:2d}: removed {removed} filters, {pnet.learnables} learnables "
            f"({100 * (1 - pnet.learnables / start):.1f}% fewer), val accuracy {accuracy(pnet, x_val, y_val):.1f}%"
        )
    small = pnet.to_module()
    print(
        f"pruned network: {sum(p.numel() for p in small.parameters())} learnables, "
        f"validation accuracy {accuracy(small, x_val, y_val):.1f}% (baseline {base_acc:.1f}%)"
    )


if __name__ == "__main__":
    main()
