"""Runs that need only shapes go on meta tensors where the model's forward is costly: the analysis
finds what real tensors find, the model keeps no meta tensor, and where meta tensors cannot go (an
operation that reads values) the run is made on real tensors."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from prune_core import TaylorPrunableNetwork, shapes, tracing
from tests.helpers import prune_twice_and_check
from tests.test_tracing import ShapeBranchBlock, WithShapeBranch


def force_shape_runs(monkeypatch: pytest.MonkeyPatch, on_meta: bool) -> None:
    """Every shape run counts as costly (meta tensors from its first operation), or none does."""
    monkeypatch.setattr(shapes, "REAL_RUN_BUDGET_S", 0.0 if on_meta else float("inf"))
    monkeypatch.setattr(shapes, "COSTLY_OPERATION_S", 0.0)


def analysis(pnet: TaylorPrunableNetwork) -> tuple:
    graph = pnet.graph
    roots = sorted((r, graph.spaces.units(r), graph.spaces.fixed_reason(r)) for r in graph.spaces.roots())
    return graph.layers, graph.norms, graph.masked_norms, graph.bound, roots, pnet._points.copied


def meta_tensors_left(model: nn.Module) -> list[str]:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    tensors += [(f"{n}.{k}", v) for n, m in model.named_modules() for k, v in vars(m).items()]
    return [name for name, t in tensors if isinstance(t, torch.Tensor) and t.is_meta]


def mobilenet() -> nn.Module:
    return torchvision.models.mobilenet_v3_small(num_classes=10)


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 32, 32)),  # out += identity
        (mobilenet, (2, 3, 64, 64)),  # in-place hardswish, squeeze-excitation gates
        (WithShapeBranch, (2, 3, 6, 6)),  # traced with concrete shapes
    ],
)
def test_shape_runs_on_meta_tensors_find_what_real_ones_find(monkeypatch, build, shape):
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(shape)
    before = copy.deepcopy(model.state_dict())
    force_shape_runs(monkeypatch, on_meta=False)
    real = TaylorPrunableNetwork(model, x)
    force_shape_runs(monkeypatch, on_meta=True)
    recorders, recorder = [], shapes._ShapeRecorder
    monkeypatch.setattr(shapes, "_ShapeRecorder", lambda gm, stack: recorders.append(stack) or recorder(gm, stack))
    meta = TaylorPrunableNetwork(model, x)
    assert recorders and None not in recorders  # the run stayed on meta tensors: no second run on real ones
    assert (real.graph.costly_forward, meta.graph.costly_forward) == (False, True)
    assert analysis(meta) == analysis(real)
    assert meta_tensors_left(meta.model) == [] and meta_tensors_left(model) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    meta.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), meta(x), rtol=1e-5, atol=1e-6)


@torch.fx.wrap
def scaled_by_largest(x: torch.Tensor) -> torch.Tensor:
    """Reads a value (meta tensors have none)."""
    return x / max(x.abs().max().item(), 1.0)


class ReadsValues(nn.Module):
    """A graph operation that reads a value, and a tensor kept outside the parameters and buffers:
    each stops a run on meta tensors."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 3)
        self.scale = torch.linspace(0.5, 1.5, 8).view(8, 1, 1)

    def forward(self, x):
        x = self.conv2(F.relu(scaled_by_largest(self.conv1(x)))) * self.scale
        return self.head(F.relu(self.conv3(F.relu(x))).mean((2, 3)))


def test_runs_that_meta_tensors_cannot_make_are_made_on_real_tensors(monkeypatch):
    force_shape_runs(monkeypatch, on_meta=True)
    model, x = ReadsValues(), torch.randn(2, 3, 8, 8)
    pnet, small = prune_twice_and_check(model, x)
    assert pnet.graph.costly_forward and small.conv3.out_channels < 8
    assert meta_tensors_left(pnet.model) == [] and meta_tensors_left(small) == []


class KeepsByMask(nn.Module):
    """Inside a module traced with concrete shapes, a size only values give (``nonzero``) decides
    the control flow: meta tensors cannot give it, the real example can."""

    def __init__(self):
        super().__init__()
        self.register_buffer("keep", torch.tensor([1.0, 0.0, 1.0, 1.0]))
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        rows = torch.nonzero(self.keep).flatten()
        x = self.fc(x.transpose(1, 3)).transpose(1, 3)
        return x[:, :, rows] if rows.shape[0] < x.shape[2] else x


class WithMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(3, 8, 3, padding=1), KeepsByMask()

    def forward(self, x):
        return self.block(self.stem(x)).mean((2, 3))


def test_shapes_only_values_give_are_traced_with_the_real_example():
    _, untraceable = tracing.trace(WithMask().train(), (torch.randn(2, 3, 4, 4),))
    assert untraceable == {}


class FourBranchBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[ShapeBranchBlock() for _ in range(4)])

    def forward(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))


def test_every_module_of_the_class_fx_stops_in_is_traced_with_concrete_shapes_at_once(monkeypatch):
    traced = []
    trace = tracing._ShapeTracer.trace
    monkeypatch.setattr(tracing._ShapeTracer, "trace", lambda self, root: traced.append(1) or trace(self, root))
    _, untraceable = tracing.trace(FourBranchBlocks().train(), (torch.randn(2, 3, 6, 6),))
    assert untraceable == {} and len(traced) == 1  # one concrete trace, not one per block


class TopLevelKeepsByMask(nn.Module):
    """The model's own forward needs a size only values give."""

    def __init__(self):
        super().__init__()
        self.register_buffer("keep", torch.tensor([1.0, 0.0, 1.0]))
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 2)

    def forward(self, x):
        rows = torch.nonzero(self.keep).flatten()
        if rows.shape[0] < x.shape[2]:
            x = x[:, :, rows]
        return self.head(self.conv(x).mean((2, 3)))


def test_a_model_traced_whole_with_concrete_shapes_gets_the_real_example_where_meta_fails():
    model, x = TopLevelKeepsByMask(), torch.randn(2, 3, 4, 4)
    pnet, small = prune_twice_and_check(model, x)
    assert small.conv.out_channels < 8


def test_a_tensor_the_forward_computes_from_the_meta_example_does_not_become_a_graph_constant():
    """ConViT caches its relative positions on a forward; traced again with the example on meta
    tensors, its attention baked a meta tensor into the graph, and the shape run then mixed devices
    (the second wrapper of a model failed). The trace is then made with the real example."""
    timm = pytest.importorskip("timm")
    model, x = timm.create_model("convit_tiny", pretrained=False).eval(), torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        model(x)  # fills the cache
    pnet = TaylorPrunableNetwork(model, x, criterion="l1")
    assert pnet.num_prunables > 0 and meta_tensors_left(pnet.model) == []
    pnet.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), pnet(x), rtol=1e-5, atol=1e-6)
