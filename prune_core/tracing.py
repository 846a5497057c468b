"""Trace a model with torch.fx, as far as fx can go.

A plain symbolic trace comes first. Where fx stops inside a submodule (Python control flow on a
shape, such as a window-attention block testing ``H == self.window_size``), that module is traced
again with *concrete shapes*: the tracer runs the example input alongside, and inside that module
``x.shape``, ``x.size()``, ``x.dim()`` and ``len(x)`` are the example's numbers. The graph of such
a module holds literal sizes, which the channel analysis treats as hard-coded channel counts, so
its channels are only pruned where no size depends on them. Control flow on tensor *values* still
fails there; that module is then kept whole (an operation the analysis does not understand), in
place: what its failed attempt added to the graph and cached on it is undone and the trace goes
on, so a model with many such modules is not traced again once per module.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import fx, nn

from prune_core import ops
from prune_core.meta_results import remembered
from prune_core.module_state import attributes_kept, on_meta, put_back, saved_attributes, to_meta


class _Tracer(fx.Tracer):
    """fx's tracer that keeps drop-path modules and the modules in ``opaque`` whole (call_module),
    and finds a parameter's name in a dict (fx searches all of them at every access)."""

    examples_missing = False  # no example runs alongside this tracer

    def __init__(self, model: nn.Module, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.tensors = dict([*model.named_buffers(), *model.named_parameters()])
        self.tensor_names = {id(t): name for name, t in self.tensors.items()}
        self.kept_whole: dict[str, str] = {}  # modules that failed in this trace and were kept whole (why)

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
        self.examples_missing = False  # an operation could not run on its examples
        self.proxy_cache: dict[str, fx.Proxy] = {}  # fx's cache of get_attr proxies of this trace
        self.meta_results: dict[Any, Any] = {}  # results of operations on meta examples, by their inputs' shapes

    def in_concrete_module(self) -> bool:
        return any(path in self.concrete for path, _ in self.module_stack.values()) or "" in self.concrete

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapeProxy(node, self)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        self.proxy_cache = parameter_proxy_cache
        return attr_val if self.running else super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if self.running:
            return forward(*args, **kwargs)
        path = self.path_of_module(m)
        if path not in self.concrete or self.is_leaf_module(m, path):
            return super().call_module(m, forward, args, kwargs)
        return self._call_or_keep_whole(m, path, forward, args, kwargs)

    def _call_or_keep_whole(self, m: nn.Module, path: str, forward: Any, args: tuple, kwargs: dict) -> Any:
        """Trace concrete module ``path``; where its own code fails even with real shapes, undo what it
        added to the graph and what it cached, and keep it whole in place, rather than tracing the whole
        model again."""
        last_node, depth, calls = next(reversed(self.graph.nodes), None), len(self.module_stack), dict(self.num_calls)
        saved = saved_attributes(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as err:  # fx raises many exception types for untraceable code
            if len(self.module_stack) != depth + 1:  # a submodule failed: the caller decides
                raise
            put_back(saved)
            self._undo_after(last_node)
            while len(self.module_stack) > depth:
                self.module_stack.popitem(last=True)
            self.num_calls = calls
            self.kept_whole[path] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            self.opaque.add(path)
            return super().call_module(m, forward, args, kwargs)

    def _undo_after(self, last_node: fx.Node | None) -> None:
        """Erase the graph's nodes created after ``last_node``, newest first, and forget their proxies."""
        erased = set()
        for node in reversed(self.graph.nodes):
            if node is last_node:
                break
            erased.add(node)
            self.graph.erase_node(node)
        for name in [name for name, proxy in self.proxy_cache.items() if proxy.node in erased]:
            del self.proxy_cache[name]

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
        unknown = False

        def example(arg: Any) -> Any:
            nonlocal unknown
            if not isinstance(arg, fx.Proxy):
                return arg
            value = _example_of(arg)
            unknown |= value is None
            return value

        values = fx.node.map_aggregate((args, kwargs), example)
        if unknown:  # an input is unknown: so is the output
            return None
        return remembered(self.meta_results, kind, target, values, lambda: self._run(kind, target, *values))

    def _run(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        """Run one operation on example values (``None`` where it cannot run on them)."""
        self.running = True
        try:
            with torch.no_grad():
                if kind == "call_function":
                    return target(*args, **kwargs)
                if kind == "call_method":
                    return getattr(args[0], target)(*args[1:], **kwargs)
                return self.root.get_submodule(target)(*args, **kwargs)
        except Exception:  # an operation that cannot run on these values: its shape stays symbolic
            self.examples_missing = True
            return None
        finally:
            self.running = False


def _example_of(proxy: fx.Proxy) -> Any:
    """The example value of ``proxy``; an attribute read (``x.ndim`` outside a concrete module, an
    ``fx.proxy.Attribute``) is the attribute of its object's example."""
    if isinstance(proxy, fx.proxy.Attribute):
        base = _example_of(proxy.root) if isinstance(proxy.root, fx.Proxy) else proxy.root
        return None if base is None else getattr(base, proxy.attr, None)
    return proxy.example if isinstance(proxy, _ShapeProxy) else None


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ``model``, with concrete shapes inside the submodules a symbolic trace cannot enter
    and, where even that fails, the submodule kept whole. Returns the graph and the modules kept
    whole (name -> why).

    The example runs alongside on meta tensors (shapes without arithmetic); where that leaves a
    module whole or fails, or a tensor the forward computed from the example became a constant of
    the graph (a meta tensor then), the trace is made again with the real example."""
    try:
        gm, untraceable, examples_missing = _trace(model, example_inputs, examples_on_meta=True)
        if not (untraceable and examples_missing) and not _holds_meta_tensors(gm):
            return gm, untraceable
    except ValueError:  # not traceable with the examples on meta tensors; perhaps with the real ones
        pass
    gm, untraceable, _ = _trace(model, example_inputs, examples_on_meta=False)
    return gm, untraceable


def _trace(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], examples_on_meta: bool
) -> tuple[fx.GraphModule, dict[str, str], bool]:
    """:func:`trace`, with the examples on meta tensors or real ones; also returns whether an
    operation could not run on the examples."""
    missing = False
    concrete: set[str] = set()
    untraceable = _hooked(model)
    while True:
        try:
            with attributes_kept(model):  # a forward traced with concrete shapes may cache what it computed
                with on_meta(model) if examples_on_meta and concrete else contextlib.nullcontext():
                    tracer = _new_tracer(model, untraceable, concrete, example_inputs, examples_on_meta)
                    graph = tracer.trace(model)
                missing |= tracer.examples_missing
                untraceable.update(tracer.kept_whole)
                return fx.GraphModule(tracer.root, graph, type(model).__name__), untraceable, missing
        except Exception as err:  # fx raises many exception types for untraceable code
            missing |= tracer.examples_missing
            untraceable.update(tracer.kept_whole)
            path = tracer.failing_module()
            if path not in concrete:
                concrete |= _alike(model, path)
                continue
            if not path or path in untraceable:
                raise ValueError(
                    f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}). "
                    "The model's forward must be traceable: no control flow on tensor values."
                ) from err
            untraceable[path] = f"{type(err).__name__}: {str(err).splitlines()[0]}"


def _new_tracer(
    model: nn.Module,
    untraceable: dict[str, str],
    concrete: set[str],
    example_inputs: tuple[torch.Tensor, ...],
    examples_on_meta: bool,
) -> _Tracer:
    if not concrete:
        return _Tracer(model, set(untraceable))
    examples = to_meta(example_inputs) if examples_on_meta else example_inputs
    return _ShapeTracer(model, set(untraceable), concrete, examples)


def _holds_meta_tensors(gm: fx.GraphModule) -> bool:
    return any(t.is_meta for t in [*gm.parameters(), *gm.buffers()]) or any(
        isinstance(value, torch.Tensor) and value.is_meta for module in gm.modules() for value in vars(module).values()
    )


def _hooked(model: nn.Module) -> dict[str, str]:
    """The submodules with forward hooks or pre-hooks, kept whole: fx traces a module's forward
    without its hooks, and a hook may change what the module computes."""
    return {
        name: "it has forward hooks, which tracing does not see"
        for name, module in model.named_modules()
        if name and (module._forward_hooks or module._forward_pre_hooks)
    }


def _alike(model: nn.Module, path: str) -> set[str]:
    """``path`` and every module of the same class: the same code stops fx in all of them, and one
    trace marks them all (rather than one trace per module)."""
    if not path:
        return {path}
    kind = type(model.get_submodule(path))
    return {name for name, module in model.named_modules() if type(module) is kind}
