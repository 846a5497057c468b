"""Tracing that does not give up and never changes the model: concrete shapes where fx stops on
control flow over shapes, tensors a forward replaces or changes put back, generators left alone."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import TaylorPrunableNetwork
from tests.helpers import prune_twice_and_check


class CachedPositions(nn.Module):
    """ConViT's GPSA: a non-persistent buffer the forward replaces, at a new shape, on first use
    (fx cannot trace the shape test, so the block is kept whole)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("positions", torch.zeros(1, 1), persistent=False)

    def forward(self, x):
        if self.positions.shape[-1] != x.shape[-1]:
            self.positions = torch.linspace(0.5, 1.5, x.shape[-1]).expand(x.shape[-2], -1).clone()
        return x * self.positions


class WithCachedPositions(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.positions, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), CachedPositions(), nn.Conv2d(8, 8, 3)

    def forward(self, x):
        return self.conv2(self.positions(F.relu(self.conv1(x))))


def test_a_buffer_the_forward_replaces_is_put_back_as_it_was():
    model, x = WithCachedPositions(), torch.randn(2, 3, 6, 6)
    pnet = TaylorPrunableNetwork(copy.deepcopy(model), x)  # wrapped before its first forward
    assert pnet.model.positions.positions.shape == (1, 1)  # put back, not overwritten in place at the new shape
    with torch.no_grad():
        assert torch.allclose(model(x), pnet(x), rtol=1e-5, atol=1e-6)


class ShapeBranchBlock(nn.Module):
    """Python control flow on a shape (window attention's ``if H == window``): fx's symbolic trace
    stops here, the concrete-shape trace goes through."""

    def __init__(self, dim=8, hidden=16):
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.Dropout(0.5)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        if h == w:
            tokens = tokens + self.fc2(self.drop(F.gelu(self.fc1(tokens))))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class WithShapeBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 8, 3, padding=1), ShapeBranchBlock(), nn.Linear(8, 4)

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        if x.shape[-1] > 1:  # the same at the top level
            x = x.mean((2, 3))
        return self.head(x)


def test_modules_with_control_flow_on_shapes_are_traced_with_concrete_shapes_and_prune_exactly():
    from prune_core import analyze_network

    model, x = WithShapeBranch(), torch.randn(2, 3, 6, 6)
    rng = torch.get_rng_state()
    report = analyze_network(model, x)
    assert torch.equal(torch.get_rng_state(), rng)  # the train-mode tracing ran dropout on a forked generator
    reasons = report.layers.set_index("layer")["reason"]
    assert "block.fc1" in report.prunable_layer_names  # the MLP's hidden units
    assert "hard-codes the channel count" in reasons["stem"]  # reshape(b, c, h, w) with c a literal now
    pnet, small = prune_twice_and_check(model, x)
    assert small.block.fc1.out_features < 16
    with torch.no_grad():
        small.train()(x)  # the training-mode branch (dropout) runs on the pruned network


class InPlaceShapeBlock(ShapeBranchBlock):
    """A block that also changes a view's shape in place (``unsqueeze_``): the one kind of operation
    whose result is not a function of its inputs' shapes alone."""

    def forward(self, x):
        y = super().forward(x).flatten(2)
        y.unsqueeze_(1)
        return y.squeeze(1).reshape(x.shape)


class RepeatedShapeBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)
        self.blocks = nn.Sequential(ShapeBranchBlock(), InPlaceShapeBlock(), ShapeBranchBlock(), InPlaceShapeBlock())

    def forward(self, x):
        return self.head(self.blocks(F.relu(self.stem(x))).mean((2, 3)))


def test_operations_repeated_on_meta_examples_are_computed_once_and_trace_as_before(monkeypatch):
    """Repeated blocks traced with concrete shapes on meta examples: each distinct operation runs once,
    in-place ones every time, and the graph is the one computing every operation gives."""
    from prune_core import meta_results, tracing

    model, x = RepeatedShapeBlocks(), torch.randn(2, 3, 6, 6)
    runs = {}
    for remember in (True, False):
        computed = []

        def counting(results, kind, target, values, compute, remember=remember, computed=computed):
            count = lambda: computed.append(target) or compute()  # noqa: E731
            return meta_results.remembered(results, kind, target, values, count) if remember else count()

        monkeypatch.setattr(tracing, "remembered", counting)
        gm, kept = tracing.trace(model, (x,))
        runs[remember] = gm.code, kept, computed
    (code, kept, computed), (code_all, kept_all, computed_all) = runs[True], runs[False]
    assert code == code_all and kept == kept_all
    assert len(computed) < 0.7 * len(computed_all)  # the repeats of blocks 1 and 2 run only their in-place op
    assert computed.count("unsqueeze_") == computed_all.count("unsqueeze_") == 2
    prune_twice_and_check(model, x)


class SamePadConv(nn.Conv2d):
    """timm's Conv2dSame: the padding computed from the input's size, with a test on it."""

    def forward(self, x):
        pad = max((-(-x.size(-1) // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - x.size(-1), 0)
        if pad > 0:
            x = F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
        return super().forward(x)


class ShapeReadThenSamePad(nn.Module):
    """MaxViT's stem and stages: the top-level forward reads ``x.shape`` and ``x.ndim`` (attribute
    nodes of the graph) before a block that needs concrete shapes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = SamePadConv(8, 8, 3, stride=2, groups=8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        torch._assert(x.ndim == 4, "expected NCHW")
        b, c, h, w = x.shape
        x = x.reshape(b, c, h, w)
        return self.head(F.relu(self.down(x)))


def test_shapes_read_as_attributes_outside_a_concrete_module_keep_the_example_flowing():
    from prune_core import analyze_network

    model, x = ShapeReadThenSamePad(), torch.randn(2, 3, 9, 9)
    report = analyze_network(model, x)
    reasons = report.layers.set_index("layer")["reason"]
    assert "kept whole" not in str(reasons.get("down", ""))  # traced with concrete shapes, not kept whole
    assert "down" in report.prunable_layer_names
    pnet, small = prune_twice_and_check(model, x)
    assert small.down.out_channels < 8


class DecayingWeights(nn.Module):
    """A forward that changes a parameter through ``.data`` (no version count): every run halves it."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 2)

    def forward(self, x):
        self.conv2.weight.data.mul_(0.5)
        return self.head(self.conv2(F.relu(self.conv1(x))).mean((2, 3)))


def test_parameters_a_forward_changes_are_put_back_after_tracing_and_capture():
    model, x = DecayingWeights(), torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(copy.deepcopy(model), x)
    assert torch.equal(pnet.model.conv2.weight, model.conv2.weight)
    with torch.no_grad():
        assert torch.allclose(model(x), pnet(x), rtol=1e-5, atol=1e-6)


class CachesThenBranchesOnValues(nn.Module):
    """ConViT's GPSA in miniature: a shape test (traced with concrete shapes) guards a cache the
    forward fills, then control flow on values makes the module untraceable after all."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.positions = None

    def forward(self, x):
        if self.positions is None or self.positions.shape[-1] != x.shape[-1]:
            self.positions = x.new_ones(x.shape[-1])
        y = self.conv(x) * self.positions
        return y if y.sum() > -1e9 else -y


class WithCache(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block, self.head = (
            nn.Conv2d(3, 8, 3, padding=1),
            CachesThenBranchesOnValues(),
            nn.Conv2d(8, 4, 3),
        )

    def forward(self, x):
        return self.head(self.block(F.relu(self.stem(x)))).mean((2, 3))


def test_what_a_forward_caches_while_traced_is_dropped_with_the_failed_trace():
    model, x = WithCache(), torch.randn(2, 3, 6, 6)
    pnet = TaylorPrunableNetwork(copy.deepcopy(model), x)
    assert not isinstance(pnet.model.block.positions, torch.fx.Proxy)  # no tracing proxy left behind
    with torch.no_grad():
        assert torch.allclose(model(x), pnet(x), rtol=1e-5, atol=1e-6)


class CachingStages(nn.Module):
    """Instances of a module that fails even with concrete shapes, each behind a prunable pair of convs."""

    def __init__(self, stages=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.ModuleList(nn.Conv2d(8, 16, 1) for _ in range(stages))
        self.reduce = nn.ModuleList(nn.Conv2d(16, 8, 1) for _ in range(stages))
        self.blocks = nn.ModuleList(CachesThenBranchesOnValues() for _ in range(stages))

    def forward(self, x):
        x = F.relu(self.stem(x))
        for expand, reduce, block in zip(self.expand, self.reduce, self.blocks, strict=True):
            x = block(reduce(F.relu(expand(x))))
        return x.mean((2, 3))


def test_every_instance_that_fails_with_concrete_shapes_is_kept_whole_without_a_trace_each(monkeypatch):
    """A module failing with concrete shapes is kept whole where it fails, within the trace: as many traces of the
    model for three failing instances as for one (there was one more trace per instance: 11 for twins_svt_small)."""
    from prune_core import analyze_network

    traces = []
    trace = torch.fx.Tracer.trace
    monkeypatch.setattr(torch.fx.Tracer, "trace", lambda self, *a, **k: traces.append(1) or trace(self, *a, **k))
    x = torch.randn(2, 3, 6, 6)
    TaylorPrunableNetwork(CachingStages(stages=1), x)
    traces_for_one, traces[:] = len(traces), []
    model = CachingStages(stages=3)
    reasons = analyze_network(model, x).layers.set_index("layer")["reason"]
    assert len(traces) == traces_for_one
    assert all("kept whole" in reasons[f"blocks.{i}.conv"] for i in range(3))
    pnet, small = prune_twice_and_check(copy.deepcopy(model), x)
    assert all(conv.out_channels < 16 for conv in small.expand)
    assert all(not isinstance(block.positions, torch.fx.Proxy) for block in pnet.model.blocks)


class CachesInADict(nn.Module):
    """timm's EfficientViT attention in miniature: a tensor computed once per key and kept in a dict
    the module owns (its key, under tracing, the text of a proxy)."""

    def __init__(self):
        super().__init__()
        self.conv, self.scale, self.cache = nn.Conv2d(8, 8, 1), nn.Parameter(torch.rand(8, 1, 1) + 0.5), {}

    def forward(self, x):
        key = str(x.shape[-1])
        if key not in self.cache:
            self.cache[key] = self.scale * 2
        return self.conv(x) * self.cache[key]


class ShapeBranch(nn.Module):
    """Python control flow on a shape: fx stops here, and the model is traced again with concrete shapes."""

    def forward(self, x):
        return x * 2 if x.shape[-1] % 2 == 0 else x


class DictCacheThenShapeBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.cached, self.branch = nn.Conv2d(3, 8, 3, padding=1), CachesInADict(), ShapeBranch()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.branch(F.relu(self.cached(F.relu(self.stem(x)))))).mean((2, 3))


def test_what_a_forward_puts_in_a_dict_it_owns_is_dropped_with_the_failed_trace():
    """The first trace's entries in a module's own dict are gone when the model is traced again: no
    proxy of an abandoned graph is read back into the next one, and the dict is the user's again."""
    model, x = DictCacheThenShapeBranch(), torch.randn(2, 3, 6, 6)
    pnet, _ = prune_twice_and_check(copy.deepcopy(model), x)
    assert model.cached.cache == {} and not any(isinstance(v, torch.fx.Proxy) for v in pnet.model.cached.cache.values())


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))


def test_a_module_with_forward_hooks_is_kept_whole():
    """A hook (here one that reverses the channels) changes what its module computes, and fx traces
    forwards without hooks: the module's channels are fixed, the rest prunes exactly."""
    from prune_core import analyze_network

    model, x = TwoConvs(), torch.randn(2, 3, 8, 8)
    model.conv1.register_forward_hook(lambda module, args, out: out.flip(1))
    reasons = analyze_network(model, x).layers.set_index("layer")["reason"]
    assert "forward hooks" in reasons["conv1"]
    pnet, small = prune_twice_and_check(model, x, fraction=0.3)
    assert small.conv1.out_channels == 8 and small.conv2.out_channels < 8


@pytest.mark.parametrize("enabled", [True, False])
def test_wrapping_leaves_the_garbage_collector_as_it_was_even_when_it_fails(enabled):
    import gc

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        TaylorPrunableNetwork(TwoConvs(), torch.randn(1, 3, 8, 8))
        assert gc.isenabled() is enabled
        with pytest.raises(ValueError):
            TaylorPrunableNetwork(TwoConvs(), torch.randn(1, 3, 8, 8), layer_names=["missing"])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
