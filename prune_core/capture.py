"""Capture the activation at every pruning point during a forward pass, safe from in-place ops."""

from __future__ import annotations

import torch
from torch import nn

from prune_core import hooks
from prune_core.graph_roles import ChannelGraph
from prune_core.module_state import on_meta, preserved_state, to_meta


class PointCapture:
    """The pruning points of ``layers`` in ``model`` (hooks installed) and how to capture them.

    In-place modules after a point are switched off while capturing, except an
    ``nn.ReLU(inplace=True)`` that is, wherever it follows a point, that point's only consumer (the
    capture is then its output, which gives the same scores). A point found overwritten in place by
    something else (``out += identity``) is copied from then on.
    """

    def __init__(self, model: nn.Module, graph: ChannelGraph, layers: list[str]) -> None:
        self.layers = layers
        self.points = [model.get_submodule(graph.points[name]) for name in layers]
        for module in self.points:
            hooks.install_capture(module)
        relus = {name: graph.relu_after_point[name] for name in layers if name in graph.relu_after_point}
        off = {m for name in layers for m in graph.inplace_modules.get(name, []) if relus.get(name) != m}
        self.inplace_modules = [model.get_submodule(name) for name in sorted(off)]
        self.inplace_relus = {name: model.get_submodule(m) for name, m in relus.items() if m not in off}
        self.copied: set[str] = set()

    def run(self, model: nn.Module, *args, require_all: bool = True, **kwargs) -> tuple[object, list, set[str]]:
        """``model(*args, **kwargs)``, the activation of every point (layer order) and the points
        found overwritten in place (copied from now on)."""
        for name, module in zip(self.layers, self.points, strict=True):
            module._prune_capture = hooks.CAPTURE_COPY if name in self.copied else hooks.CAPTURE_ALIAS
        inplace = [m for m in self.inplace_modules if m.inplace]
        for module in inplace:
            module.inplace = False
        try:
            out = model(*args, **kwargs)
            acts = [module._prune_act for module in self.points]
            overwritten = {
                name
                for name, module, act in zip(self.layers, self.points, acts, strict=True)
                if act is not None and act._version - module._prune_version > self._expected_writes(name)
            }
        finally:
            for module in self.points:
                module._prune_capture, module._prune_act = hooks.CAPTURE_OFF, None
            for module in inplace:
                module.inplace = True
        missed = [name for name, act in zip(self.layers, acts, strict=True) if act is None]
        if missed and require_all:
            raise RuntimeError(
                f"the pruning points of {missed} were not reached by this forward pass; branches that run "
                "in training mode only (auxiliary heads) are scored in training mode."
            )
        self.copied |= overwritten
        return out, acts, overwritten

    def _expected_writes(self, name: str) -> int:
        """In-place writes a capture may see on a point: 1 from the in-place ReLU kept after it."""
        relu = self.inplace_relus.get(name)
        return int(relu is not None and relu.inplace)

    def find_overwritten(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        pristine: nn.Module | None = None,
        on_meta_tensors: bool = False,
    ) -> None:
        """One capture pass (eval mode, no gradients, state restored) to find points modified in place,
        on the first example of the batch: which operations write in place does not depend on it.
        With ``on_meta_tensors`` (a costly forward) the pass runs on meta tensors where it can:
        in-place writes count on them as on real ones."""
        first = tuple(t[:1] if isinstance(t, torch.Tensor) and t.dim() else t for t in example_inputs)
        with preserved_state(model, pristine), torch.no_grad():  # attributes and values put back
            model.eval()
            if on_meta_tensors:
                try:
                    with on_meta(model):
                        self.run(model, *to_meta(first), require_all=False)
                    return
                except Exception:  # an operation that reads values: the pass runs on real tensors
                    pass
            self.run(model, *first, require_all=False)
