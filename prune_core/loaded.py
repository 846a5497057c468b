"""A pruned network loaded from its exported graphs, usable as an ordinary ``nn.Module``.

``torch.export`` programs unlift into GraphModules whose ``eval()`` and ``train()`` raise, and whose
graph is frozen in the mode it was exported in. A saved pruned network therefore holds two
programs over the same parameters: one traced in training mode (BatchNorm normalises by the batch
and updates its running statistics, dropout drops) and one in eval mode. :class:`LoadedNetwork`
owns the parameters and buffers once, under the original module names, and runs the graph that
matches ``self.training``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

TRAINING_PROGRAM = "train"
"""Name of the training-mode program in a saved file; the eval-mode one is torch's default "model"."""


def _graph_function(graph: GraphModule) -> Callable[..., Any]:
    """The generated ``forward`` of ``graph``: reads parameters as ``self.<name>``, so any module
    holding the same names can run it."""
    return type(graph).forward


def _state_names(graph: GraphModule) -> set[str]:
    return {name for name, _ in graph.named_parameters()} | {name for name, _ in graph.named_buffers()}


def _check_same_state(training: GraphModule, inference: GraphModule) -> None:
    names, other = _state_names(training), _state_names(inference)
    if names != other:
        raise ValueError(
            f"the training and eval programs hold different tensors ({sorted(names ^ other)[:5]}); "
            "the file was not written by prune_core.save_pruned"
        )


class LoadedNetwork(nn.Module):
    """A pruned network read back by :func:`prune_core.load_pruned`.

    ``eval()``, ``train()``, ``to()``, ``parameters()``, ``state_dict()`` and ``requires_grad_()``
    work as on the network that was saved: BatchNorm and dropout follow the mode, so the network
    can be fine-tuned further. State-dict keys are the saved network's own. A file holding only an
    eval-mode program (written by ``torch.export.save`` or MLflow) gives an inference-only network:
    ``train()`` raises.
    """

    def __init__(self, inference: GraphModule, training: GraphModule | None = None) -> None:
        super().__init__()
        owner = training if training is not None else inference
        if training is not None:
            _check_same_state(training, inference)
        for name, child in owner.named_children():
            self.add_module(name, child)
        for name, parameter in owner._parameters.items():
            self.register_parameter(name, parameter)
        for name, buffer in owner._buffers.items():
            self.register_buffer(name, buffer, persistent=name not in owner._non_persistent_buffers_set)
        self._in_spec, self._out_spec = inference._in_spec, inference._out_spec
        self._inference = _graph_function(inference)
        self._training = _graph_function(training) if training is not None else None
        self.eval()

    @property
    def trainable(self) -> bool:
        """Whether the file held the training-mode graph (``train()`` is allowed)."""
        return self._training is not None

    def train(self, mode: bool = True) -> LoadedNetwork:
        if mode and self._training is None:
            raise ValueError(
                "this network was loaded from an eval-mode program only (torch.export.save or an MLflow "
                "model without prune_core's file), so it runs inference but cannot be trained; load the "
                "file written by prune_core.save_pruned, or the MLflow model's URI with prune_core.load_pruned"
            )
        return super().train(mode)

    def forward(self, *inputs: torch.Tensor) -> Any:
        graph = self._training if self.training else self._inference
        return graph(self, *inputs)
