"""The forward hooks that simulate pruning on the wrapped model, and their removal.

A consumer layer (a conv or Linear reading pruned channels) gets a pre-hook zeroing its pruned
input channels; a LayerNorm over channels a hook normalising over the kept channels only; a
pruning point a hook capturing its activation for the Taylor score.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_core import importance

_IN_MASK = "_prune_in_mask"
_NORM_MASK = "_prune_norm_mask"
_ATTRS = (
    "_prune_in_active", "_prune_in_dim", "_prune_capture", "_prune_act", "_prune_version",
    "_prune_norm_active", "_prune_norm_dim", "_prune_norm_eps",
)  # fmt: skip
CAPTURE_OFF, CAPTURE_ALIAS, CAPTURE_COPY = 0, 1, 2


def _mask_input(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: zero the pruned input channels of a conv or Linear."""
    if not module._prune_in_active:
        return None
    x = args[0]
    shape = [1] * x.dim()
    shape[module._prune_in_dim] = -1
    return (x * getattr(module, _IN_MASK).view(shape), *args[1:])


def _masked_layer_norm(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook of a LayerNorm over channels: normalise over the kept channels only, as the
    extracted network will (pruned channels get values no kept unit reads)."""
    if not module._prune_norm_active:
        return None
    x = args[0].movedim(module._prune_norm_dim, -1)
    mask = getattr(module, _NORM_MASK).to(x.dtype)
    kept = mask.sum()
    centered = x - (x * mask).sum(-1, keepdim=True) / kept
    variance = (centered.square() * mask).sum(-1, keepdim=True) / kept
    y = centered * torch.rsqrt(variance + module._prune_norm_eps)
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    y = y * weight if weight is not None else y
    y = y + bias if bias is not None else y
    return y.movedim(-1, module._prune_norm_dim)


def _capture_point(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook at a pruning point: keep the activation while capturing.

    In-place modules after the point are switched off while capturing, except an
    ``nn.ReLU(inplace=True)`` that alone consumes the point (the capture is then its output); where
    another in-place operation (``out += identity``) would overwrite the activation, the model
    continues with a copy.
    """
    if not module._prune_capture:
        return None
    module._prune_act, module._prune_version = output, output._version
    return output.clone() if module._prune_capture == CAPTURE_COPY else None


@torch.no_grad()
def add_taylor_score(total: torch.Tensor, dim: int, activation: torch.Tensor, gradient: torch.Tensor) -> None:
    """Gradient hook of ``score_on_backward``: add one mini-batch's scores to ``total``."""
    total.add_(importance.taylor_batch_scores(activation, gradient, dim).to(total.device))


def install_input_mask(module: nn.Module, channel_dim: int) -> None:
    module.register_buffer(_IN_MASK, torch.ones(0, dtype=torch.bool), persistent=False)
    module._prune_in_active, module._prune_in_dim = False, channel_dim
    module.register_forward_pre_hook(_mask_input)


def install_norm_mask(module: nn.Module, channel_dim: int, eps: float) -> None:
    module.register_buffer(_NORM_MASK, torch.ones(0, dtype=torch.bool), persistent=False)
    module._prune_norm_active, module._prune_norm_dim, module._prune_norm_eps = False, channel_dim, eps
    module.register_forward_hook(_masked_layer_norm)


def install_capture(module: nn.Module) -> None:
    module._prune_capture, module._prune_act = CAPTURE_OFF, None
    module.register_forward_hook(_capture_point)


def set_input_mask(module: nn.Module, mask: torch.Tensor) -> None:
    setattr(module, _IN_MASK, mask.to(getattr(module, _IN_MASK).device))
    module._prune_in_active = not bool(mask.all())


def set_norm_mask(module: nn.Module, mask: torch.Tensor) -> None:
    setattr(module, _NORM_MASK, mask.to(getattr(module, _NORM_MASK).device))
    module._prune_norm_active = not bool(mask.all())


def remove_all(model: nn.Module) -> None:
    """Take every pruning hook, mask buffer and hook attribute off ``model``'s modules."""
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, fn in hooks.items() if fn in (_mask_input, _capture_point, _masked_layer_norm)]:
                del hooks[key]
        module._buffers.pop(_IN_MASK, None)
        module._buffers.pop(_NORM_MASK, None)
        for attr in _ATTRS:
            module.__dict__.pop(attr, None)
