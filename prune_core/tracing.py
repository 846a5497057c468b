"""Trace a model with torch.fx, as far as fx can go.

A plain symbolic trace comes first. Where fx stops inside a submodule (Python control flow on a
shape, such as a window-attention block testing ``H == self.window_size``), that module is traced
again with *concrete shapes*: the tracer runs the example input alongside, and inside that module
``x.shape``, ``x.size()``, ``x.dim()`` and ``len(x)`` are the example's numbers. The graph of such
a module holds literal sizes, which the channel analysis treats as hard-coded channel counts, so
its channels are only pruned where no size depends on them. Control flow on tensor *values* still
fails there; that module is then kept whole (an operation the analysis does not understand).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import fx, nn

from prune_core import ops


class _Tracer(fx.Tracer):
    """fx's tracer that keeps drop-path modules and the modules in ``opaque`` whole (call_module),
    and finds a parameter's name in a dict (fx searches all of them at every access)."""

    def __init__(self, model: nn.Module, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.tensors = dict([*model.named_buffers(), *model.named_parameters()])
        self.tensor_names = {id(t): name for name, t in self.tensors.items()}

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        name = self.tensor_names.get(id(attr_val)) if isinstance(attr_val, torch.Tensor) else None
        if name is not None and (isinstance(attr_val, nn.Parameter) or self.proxy_buffer_attributes):
            if name not in parameter_proxy_cache:
                parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
            return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a: Any) -> Any:
        name = self.tensor_names.get(id(a)) if isinstance(a, torch.Tensor) else None
        if name is not None:
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if qualified_name in self.opaque or ops.is_channelwise_module(module):
            return True
        return super().is_leaf_module(module, qualified_name)

    def failing_module(self) -> str:
        """The innermost module being traced (``""``: the model's own forward)."""
        return next(reversed(self.module_stack.values()))[0] if self.module_stack else ""


class _ShapeProxy(fx.Proxy):
    """A proxy that answers shape questions with the example's numbers inside a concrete module."""

    example: Any = None

    def _concrete(self) -> torch.Tensor | None:
        tracer = self.tracer
        inside = isinstance(tracer, _ShapeTracer) and tracer.in_concrete_module()
        return self.example if inside and isinstance(self.example, torch.Tensor) else None

    @property
    def shape(self) -> Any:
        example = self._concrete()
        return example.shape if example is not None else self.__getattr__("shape")

    @property
    def ndim(self) -> Any:
        example = self._concrete()
        return example.ndim if example is not None else self.__getattr__("ndim")

    def size(self, *args: Any, **kwargs: Any) -> Any:
        example = self._concrete()
        if example is not None:
            return example.size(*args, **kwargs)
        return self.tracer.create_proxy("call_method", "size", (self, *args), kwargs)

    def dim(self) -> Any:
        example = self._concrete()
        return example.dim() if example is not None else self.tracer.create_proxy("call_method", "dim", (self,), {})

    def __len__(self) -> int:
        example = self._concrete()
        if example is None:
            return super().__len__()
        return len(example)


class _ShapeTracer(_Tracer):
    """A tracer that computes every traced value on the example inputs, so that the modules in
    ``concrete`` see real shapes."""

    def __init__(
        self, model: nn.Module, opaque: set[str], concrete: set[str], example_inputs: tuple[torch.Tensor, ...]
    ) -> None:
        super().__init__(model, opaque)
        self.concrete = concrete
        self.inputs = iter(example_inputs)
        self.running = False  # computing an example value: modules run as they are, untraced

    def in_concrete_module(self) -> bool:
        return any(path in self.concrete for path, _ in self.module_stack.values()) or "" in self.concrete

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapeProxy(node, self)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        return attr_val if self.running else super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        return forward(*args, **kwargs) if self.running else super().call_module(m, forward, args, kwargs)

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any, **options: Any) -> Any:
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **options)
        if isinstance(proxy, _ShapeProxy):
            proxy.example = self._example(kind, target, args, kwargs)
        return proxy

    def _example(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        """The value a node computes on the example inputs (``None`` where it cannot be computed)."""
        if kind == "placeholder":
            return next(self.inputs, None)
        if kind == "get_attr":
            return self.tensors.get(target)
        values = fx.node.map_aggregate((args, kwargs), lambda a: a.example if isinstance(a, _ShapeProxy) else a)
        if any(isinstance(a, fx.Proxy) for a in _flatten(values)):
            return None
        (args, kwargs), self.running = values, True
        try:
            with torch.no_grad():
                if kind == "call_function":
                    return target(*args, **kwargs)
                if kind == "call_method":
                    return getattr(args[0], target)(*args[1:], **kwargs)
                return self.root.get_submodule(target)(*args, **kwargs)
        except Exception:  # an operation that cannot run on these values: its shape stays symbolic
            return None
        finally:
            self.running = False


@contextlib.contextmanager
def _attributes_kept(model: nn.Module) -> Iterator[None]:
    """Put back every attribute, parameter, buffer and submodule entry of every module of ``model``."""
    saved = [
        (module, {key: dict(value) if key in _SLOTS else value for key, value in vars(module).items()})
        for module in model.modules()
    ]
    try:
        yield
    finally:
        for module, attributes in saved:
            slots = {key: vars(module)[key] for key in _SLOTS if key in vars(module)}
            vars(module).clear()
            vars(module).update(attributes)
            for key, entries in slots.items():  # the same dict objects, their entries as they were
                entries.clear()
                entries.update(attributes[key])
                vars(module)[key] = entries


_SLOTS = ("_parameters", "_buffers", "_modules")


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return list(itertools.chain.from_iterable(_flatten(v) for v in value))
    if isinstance(value, dict):
        return _flatten(list(value.values()))
    return [value]


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ``model``, with concrete shapes inside the submodules a symbolic trace cannot enter
    and, where even that fails, the submodule kept whole. Returns the graph and the modules kept
    whole (name -> why)."""
    concrete: set[str] = set()
    untraceable: dict[str, str] = {}
    while True:
        if concrete:
            tracer: _Tracer = _ShapeTracer(model, set(untraceable), concrete, example_inputs)
        else:
            tracer = _Tracer(model, set(untraceable))
        try:
            with _attributes_kept(model):  # a forward traced with concrete shapes may cache what it computed
                graph = tracer.trace(model)
                return fx.GraphModule(tracer.root, graph, type(model).__name__), untraceable
        except Exception as err:  # fx raises many exception types for untraceable code
            path = tracer.failing_module()
            if path not in concrete:
                concrete.add(path)
                continue
            if not path or path in untraceable:
                raise ValueError(
                    f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}). "
                    "The model's forward must be traceable: no control flow on tensor values."
                ) from err
            untraceable[path] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
