"""The shape of every value of a traced graph, computed on the example inputs.

The run starts on the real tensors. Once it has taken longer than a small budget at more than a
millisecond per operation, the model's forward is a costly one (a large network at full
resolution): the run goes on with meta tensors, which give the same shapes without computing a
value, at a fairly constant cost per operation (a fraction of a millisecond, a few for a
training-mode batch norm). Where meta tensors cannot go on (an operation that reads values), the
graph runs again on real tensors from the start.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import fx
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from prune_core.meta_results import remembered
from prune_core.module_state import attributes_kept, on_meta, to_meta

REAL_RUN_BUDGET_S = 0.2
"""Seconds of real computation after which a shape run may continue on meta tensors..."""
COSTLY_OPERATION_S = 1e-3
"""...if the real operations took longer than this on average: then meta tensors are faster."""


class _ShapeRecorder(fx.Interpreter):
    """Runs a graph and records each node's ``tensor_meta`` (what fx's ShapeProp records), moving
    to meta tensors (held in ``stack``) once the run proves costly; ``stack=None``: real tensors
    all the way."""

    def __init__(self, gm: fx.GraphModule, stack: contextlib.ExitStack | None) -> None:
        super().__init__(gm)
        self.start = time.perf_counter()
        self.stack = stack
        self.on_meta = False
        self.nodes_run = 0
        self.meta_results: dict[Any, Any] = {}  # results of operations on meta tensors, by their inputs' shapes

    def run_node(self, node: fx.Node) -> Any:
        if not self.on_meta and self._costly():
            self.stack.enter_context(on_meta(self.module))
            for key, value in self.env.items():
                self.env[key] = to_meta(value)
            self.on_meta = True
        if self.on_meta:
            with self._set_current_node(node):
                args, kwargs = self.fetch_args_kwargs_from_env(node)
                compute = getattr(self, node.op)
                result = remembered(
                    self.meta_results, node.op, node.target, (args, kwargs), lambda: compute(node.target, args, kwargs)
                )
        else:
            result = super().run_node(node)
        self.nodes_run += 1
        tensor_meta = _tensor_meta(result)
        if tensor_meta is not None:
            node.meta["tensor_meta"] = tensor_meta
        return result

    def placeholder(self, target: Any, args: tuple, kwargs: dict) -> Any:
        value = super().placeholder(target, args, kwargs)
        return to_meta(value) if self.on_meta else value  # an input read after the move to meta tensors

    def _costly(self) -> bool:
        if self.stack is None:
            return False
        elapsed = time.perf_counter() - self.start
        return elapsed > REAL_RUN_BUDGET_S and elapsed > COSTLY_OPERATION_S * self.nodes_run


def _tensor_meta(value: Any) -> Any:
    """fx's ``TensorMetadata`` in place of every tensor of ``value``; ``None`` if it holds none."""
    found = False

    def extract(item: Any) -> Any:
        nonlocal found
        if not isinstance(item, torch.Tensor):
            return item
        found = True
        return _extract_tensor_metadata(item)

    tensor_meta = map_aggregate(value, extract)
    return tensor_meta if found else None


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple[Any, ...]) -> bool:
    """Record ``node.meta["tensor_meta"]`` for every node of ``gm`` run on ``example_inputs`` (no
    gradients, attributes a forward caches dropped). Returns whether the forward proved costly
    (the run moved to meta tensors)."""
    with torch.no_grad(), attributes_kept(gm):
        try:
            with contextlib.ExitStack() as stack:
                recorder = _ShapeRecorder(gm, stack)
                recorder.run(*example_inputs)
                return recorder.on_meta
        except Exception:  # an operation meta tensors cannot run (it reads values): real tensors
            if not recorder.on_meta:
                raise
        _ShapeRecorder(gm, None).run(*example_inputs)
        return True
