"""Shared checks for the engine tests."""

from __future__ import annotations

import torch
from torch import nn

from prune_core import TaylorPrunableNetwork


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_fraction(pnet: TaylorPrunableNetwork, fraction: float, step: int | None = None) -> int:
    """Call update_prunables until at least ``fraction`` of the initial prunable filters are gone."""
    start = pnet.num_prunables
    step = step or max(1, start // 8)
    removed = 0
    while removed < fraction * start:
        got = pnet.update_prunables(max_to_prune=step)
        assert got > 0, "update_prunables removed nothing while filters were left"
        removed += got
    return removed


def prune_fraction_by_taylor(pnet: TaylorPrunableNetwork, x: torch.Tensor, fraction: float) -> None:
    """Prune at least ``fraction`` of the units in steps, each after Taylor-scoring the batch ``x``:
    alternately the way compress_network scores (``score_on_backward``) and the way MATLAB's
    ``updateScore`` does (gradients first)."""
    start, step = pnet.num_prunables, 0
    while pnet.num_prunables > (1 - fraction) * start:
        out, acts = pnet.forward_with_activations(x)
        loss = out.logsumexp(-1).sum()
        if step % 2 == 0:
            pnet.score_on_backward(acts)
            loss.backward()
        else:
            pnet.update_score(acts, torch.autograd.grad(loss, acts, allow_unused=True))
        assert pnet.update_prunables(max_to_prune=max(1, start // 8)) > 0
        step += 1


def assert_exact(pnet: TaylorPrunableNetwork, *inputs: torch.Tensor, rtol: float = 1e-5) -> nn.Module:
    """The masked network and the extracted one agree in eval mode; learnables match."""
    pnet.eval()
    small = pnet.to_module().eval()
    with torch.no_grad():
        expected, actual = pnet(*inputs), small(*inputs)
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-12)
    assert ((actual - expected).abs().max() / scale).item() < rtol
    assert pnet.learnables == n_params(small)
    return small


def prune_twice_and_check(model: nn.Module, x: torch.Tensor, fraction: float = 0.3):
    """Wrap ``model`` (random criterion), prune ``fraction`` of its units twice, checking exactness each time."""
    pnet = TaylorPrunableNetwork(model, x, criterion="random")
    assert pnet.num_prunables > 0
    for _ in range(2):
        prune_fraction(pnet, fraction)
        small = assert_exact(pnet, x)
    assert n_params(small) < n_params(model)
    return pnet, small
