"""ONNX export of a (pruned) network, with a dynamic batch dimension."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prune_core.checks import as_input_tuple
from prune_core.io import batch_dynamic


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    opset_version: int | None = None,
) -> Path:
    """Write ``model`` in eval mode as an ONNX file (torch's dynamo exporter), the batch dimension
    dynamic; the inputs are named ``input`` (``input_1``, ... for more) and the output ``output``.

    Weights are stored inside the file, so its size is the pruned network's. Needs the ``onnx`` and
    ``onnxscript`` packages (``pip install taylor-prune[export]``); ``model`` is left as it was.
    """
    inputs = as_input_tuple(example_inputs)
    names = ["input"] + [f"input_{index}" for index in range(1, len(inputs))]
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            inputs,
            input_names=names,
            output_names=["output"],
            opset_version=opset_version,
            dynamo=True,
            external_data=False,
            dynamic_shapes=batch_dynamic(inputs),
        )
    finally:
        model.train(was_training)
    path = Path(path)
    program.save(str(path))
    return path
