"""Save and load pruned networks as self-contained torch.export programs (no pickled code)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prune_core.prunable import as_input_tuple


def save_pruned(model: nn.Module, path: str | Path, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Path:
    """Export ``model`` (in eval mode) on ``example_inputs`` and write it to ``path`` (``.pt2``).

    The batch dimension stays dynamic. The file loads with torch alone, without the code that
    defined the model.
    """
    inputs = as_input_tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        batch = torch.export.Dim.AUTO
        program = torch.export.export(model, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    finally:
        model.train(was_training)
    path = Path(path)
    torch.export.save(program, path)
    return path


def load_pruned(path: str | Path) -> nn.Module:
    """Load a network written by :func:`save_pruned`, ready for inference."""
    return torch.export.load(Path(path)).module()
