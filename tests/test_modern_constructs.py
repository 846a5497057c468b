"""Modern building blocks: norm subclasses fx traces into, channels that move between dimensions,
LayerNorm over channels, layer scales, Linear hidden units, and the promise that wrapping never
changes the model."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import TaylorPrunableNetwork
from tests.helpers import assert_exact, n_params, prune_fraction, prune_fraction_by_taylor, prune_twice_and_check
from tests.test_channel_splits import PerPathWeights


class BatchNormAct(nn.BatchNorm2d):
    """What timm's BatchNormAct2d does: a BatchNorm2d subclass outside torch.nn with its activation."""

    def forward(self, x):
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, self.eps)
        return F.relu(y)


class FunctionalBNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), BatchNormAct(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 24, 3, padding=1), BatchNormAct(24)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """timm's / torchvision's channels-first LayerNorm: permute, layer_norm, permute back."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, channels-last LayerNorm and MLP, layer scale, residual add."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 16, 2, stride=2), LayerNorm2d(16)
        self.block1 = ConvNeXtBlock(16)
        self.down_norm, self.down = LayerNorm2d(16), nn.Conv2d(16, 24, 2, stride=2)
        self.block2 = ConvNeXtBlock(24)
        self.scale = nn.Parameter(torch.rand(24, 1, 1) + 0.5)  # a channels-first layer scale
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = self.block1(self.stem_norm(self.stem(x)))
        x = self.block2(self.down(self.down_norm(x))) * self.scale
        return self.head(x.mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, pre-norm attention and MLP blocks."""

    def __init__(self, dim=16, depth=2, mlp=32):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim))
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": nn.LayerNorm(dim),
                    "attn": Attention(dim, 2),
                    "norm2": nn.LayerNorm(dim),
                    "mlp": nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim)),
                }
            )
            for _ in range(depth)
        )
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = x + block["attn"](block["norm1"](x))
            x = x + block["mlp"](block["norm2"](x))
        return self.head(self.norm(x)[:, 0])


class TinyMixer(nn.Module):
    """MLP-Mixer: token mixing (Linear over the token dim, between transposes) and channel MLPs."""

    def __init__(self, dim=16, tokens=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 24), nn.GELU(), nn.Linear(24, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.channel_mlp(self.norm2(x))
        return self.head(x.mean(1))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_wrapping_a_norm_subclass_changes_neither_the_model_nor_its_copy():
    model, x = FunctionalBNNet(), torch.randn(4, 3, 8, 8)
    before = _state(model)
    pnet = TaylorPrunableNetwork(model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    copy_state = pnet.model.state_dict()
    assert all(torch.equal(before[k], copy_state[k]) for k in before)  # num_batches_tracked still 0
    for mode in ("eval", "train"):
        original, wrapper = copy.deepcopy(model), copy.deepcopy(pnet)
        getattr(original, mode)(), getattr(wrapper, mode)()
        with torch.no_grad():
            assert torch.allclose(original(x), wrapper(x), rtol=1e-5, atol=1e-6)


def test_norm_subclass_recorded_as_a_function_is_pruned_with_its_conv_exactly():
    pnet, small = prune_twice_and_check(FunctionalBNNet(), torch.randn(4, 3, 8, 8))
    assert pnet.prunable_layer_names == ["conv1", "conv2"]
    assert pnet.graph.points == {"conv1": "bn1", "conv2": "bn2", "head": "head"}
    assert small.bn1.num_features == small.conv1.out_channels == small.bn1.running_mean.numel()


def test_convnext_blocks_prune_hidden_units_and_residual_channels_exactly():
    model, x = TinyConvNeXt(), torch.randn(2, 3, 16, 16)
    pnet, small = prune_twice_and_check(model, x)
    assert {"block1.fc1", "block2.fc1", "stem", "down"} <= set(pnet.prunable_layer_names)
    assert set(pnet.graph.masked_norms) == {"stem_norm", "block1.norm", "down_norm", "block2.norm"}
    width = small.stem.out_channels
    assert small.stem_norm.normalized_shape == (width,) and small.block1.gamma.numel() == width
    assert small.block1.dwconv.groups == width and small.scale.shape == (small.down.out_channels, 1, 1)
    assert small.block1.fc1.out_features == small.block1.fc2.in_features < 64


def test_masked_layer_norm_normalises_over_kept_channels_in_train_mode_too():
    model, x = TinyConvNeXt(), torch.randn(2, 3, 16, 16)
    pnet = TaylorPrunableNetwork(model, x, criterion="random")
    prune_fraction(pnet, 0.5)
    small = pnet.to_module().train()
    pnet.train()
    assert torch.allclose(pnet(x), small(x), rtol=1e-5, atol=1e-5)


def test_vit_prunes_mlp_hidden_units_exactly_and_keeps_heads_consistent():
    model, x = TinyViT(), torch.randn(2, 3, 16, 16)
    pnet, small = prune_twice_and_check(model, x, fraction=0.25)
    assert {"blocks.0.mlp.0", "blocks.1.mlp.0"} <= set(pnet.prunable_layer_names)
    assert small.blocks[0]["mlp"][0].out_features < 32
    # the attention reshapes by the embedding width read from its input: that width stays whole
    assert small.patch.out_channels == 16 and small.cls_token.shape[-1] == 16


def test_mixer_prunes_token_and_channel_mlps_exactly():
    pnet, small = prune_twice_and_check(TinyMixer(), torch.randn(2, 3, 16, 16))
    assert {"token_mlp.0", "channel_mlp.0"} <= set(pnet.prunable_layer_names)
    assert small.token_mlp[0].out_features < 24 or small.channel_mlp[0].out_features < 32
    assert "patch" in pnet.prunable_layer_names  # the residual channels, through both kinds of block


def test_taylor_score_of_linear_units_matches_autograd():
    torch.manual_seed(0)
    model, x = TinyViT(), torch.randn(3, 3, 16, 16)
    pnet = TaylorPrunableNetwork(model, x)
    out, acts = pnet.forward_with_activations(x)
    loss = out.square().sum()
    grads = torch.autograd.grad(loss, acts)
    pnet.update_score(acts, grads)
    scores = pnet.layer_scores()
    index = pnet.prunable_layer_names.index("blocks.0.mlp.0")
    act, grad = acts[index], grads[index]  # (N, tokens, hidden)
    expected = (act * grad).mean(dim=1).abs().mean(dim=0)
    assert act.shape[-1] == 32 and torch.allclose(scores["blocks.0.mlp.0"], expected.detach(), rtol=1e-5)


@pytest.mark.parametrize("name", ["resnext26ts", "efficientnet_b0", "convnext_atto", "mixer_s16_224"])
def test_timm_models_are_faithful_and_prune_exactly(name):
    timm = pytest.importorskip("timm")
    size = 224 if name == "mixer_s16_224" else 64
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    with torch.no_grad():  # zero-initialised heads and biases would make the comparisons vacuous
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    x = torch.randn(2, 3, size, size)
    before = _state(model)
    pnet = TaylorPrunableNetwork(model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in pnet.model.state_dict().items())
    pnet.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), pnet(x), rtol=1e-5, atol=1e-6)
    prune_fraction_by_taylor(pnet, x, 0.3)
    assert_exact(pnet, x)


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


@pytest.mark.parametrize("wrapped_in", ["train", "eval"])
def test_auxiliary_heads_are_analysed_and_the_pruned_network_runs_in_both_modes(wrapped_in):
    import torchvision

    torch.manual_seed(0)
    model = _no_dropout(torchvision.models.googlenet(num_classes=10, aux_logits=True, init_weights=True))
    x = torch.randn(2, 3, 64, 64)
    pnet = TaylorPrunableNetwork(getattr(model, wrapped_in)(), x, criterion="random")
    assert {"aux1.conv.conv", "aux2.fc1"} <= set(pnet.prunable_layer_names)
    prune_fraction(pnet, 0.3)
    small = assert_exact(pnet, x)
    pnet.train(), small.train()
    expected, actual = pnet(x), small(x)
    for e, a in zip(expected, actual, strict=True):  # the main and the two auxiliary outputs
        assert torch.allclose(e, a, rtol=1e-4, atol=1e-5)


def test_auxiliary_heads_are_taylor_scored_in_training_mode_after_wrapping_in_eval_mode():
    """The heads that run in training mode only are first seen (and their in-place overwrites found)
    at the first training-mode pass: it runs again with copies, and their scores count."""
    import torchvision

    torch.manual_seed(0)
    model = _no_dropout(torchvision.models.googlenet(num_classes=10, aux_logits=True, init_weights=True))
    x = torch.randn(2, 3, 64, 64)
    pnet = TaylorPrunableNetwork(model.eval(), x).train()
    out, acts = pnet.forward_with_activations(x)
    pnet.score_on_backward(acts)
    sum(t.square().mean() for t in out).backward()
    assert pnet.layer_scores()["aux1.conv.conv"].abs().sum() > 0
    pnet.update_prunables(max_to_prune=pnet.num_prunables // 4)
    assert_exact(pnet, x)


class Untraceable(nn.Module):
    """Python control flow on a tensor value: fx cannot trace into it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.sum() > -1e9 else x


class WithUntraceableBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.block, self.conv2 = nn.Conv2d(3, 8, 3), Untraceable(), nn.Conv2d(8, 12, 3)
        self.conv3, self.head = nn.Conv2d(12, 12, 3), nn.Linear(12, 4)

    def forward(self, x):
        x = self.conv3(F.relu(self.conv2(self.block(F.relu(self.conv1(x))))))
        return self.head(x.mean((2, 3)))


def test_a_module_fx_cannot_trace_is_kept_whole_and_the_rest_prunes_exactly():
    from prune_core import analyze_network

    model, x = WithUntraceableBlock(), torch.randn(2, 3, 12, 12)
    report = analyze_network(model, x)
    reasons = report.layers.set_index("layer")["reason"]
    assert "could not be traced" in reasons["conv1"]
    assert report.prunable_layer_names == ["conv2", "conv3"]
    assert reasons["block.conv"].startswith("inside block, kept whole: TraceError")  # one row per conv
    prune_twice_and_check(model, x)


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.gn = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.head = nn.Conv2d(16, 8, 3), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.conv2(F.silu(self.gn(self.conv1(x)))).mean((2, 3)))


def test_group_norm_prunes_whole_groups_and_shrinks_num_groups():
    pnet, small = prune_twice_and_check(GroupNormNet(), torch.randn(2, 3, 8, 8), fraction=0.5)
    assert pnet.group_units[pnet.layer_groups.index(["conv1"])] < 4  # units are whole groups of 4 channels
    assert small.gn.num_channels == small.conv1.out_channels == 4 * small.gn.num_groups


def _synthetic_images(n=256, size=16, classes=5):
    """Images whose class is the brightest of five fixed patterns: learnable in a few epochs."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(classes, 3, size, size, generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    x = patterns[y] + 0.5 * torch.randn(n, 3, size, size, generator=generator)
    return x, y


class ConvWithMLPHead(nn.Module):
    """A conv body and a classifier MLP on flat features: the hidden Linear's activation is (N, C)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.hardswish(self.fc1(F.relu(self.conv(x)).mean((2, 3)))))


def test_taylor_score_of_linear_units_on_flat_features_matches_autograd():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8)
    for on_backward in (False, True):
        pnet = TaylorPrunableNetwork(ConvWithMLPHead(), x)
        out, acts = pnet.forward_with_activations(x)
        index = pnet.prunable_layer_names.index("fc1")
        act = acts[index]
        if on_backward:
            act.retain_grad()
            pnet.score_on_backward(acts)
            out.square().sum().backward()
            grad = act.grad
        else:
            grads = torch.autograd.grad(out.square().sum(), acts)
            grad = grads[index]
            pnet.update_score(acts, grads)
        assert act.shape == (5, 16)
        expected = (act * grad).abs().mean(dim=0).detach()
        torch.testing.assert_close(pnet.layer_scores()["fc1"], expected)


@pytest.mark.parametrize("net", [TinyConvNeXt, TinyViT, PerPathWeights], ids=["convnext", "vit", "split-parts"])
def test_compress_network_reaches_the_goal_on_modern_blocks(net):
    from prune_core import TrainingOptions, compress_network, network_metrics
    from prune_core.results import GOAL_REACHED

    torch.manual_seed(0)
    x, y = _synthetic_images()
    model = net()
    validation = {"validation_data": (x[:64], y[:64]), "validation_frequency": 4}
    options = TrainingOptions(max_epochs=1, mini_batch_size=32, initial_learn_rate=0.01, **validation)
    pruned, info = compress_network(
        model, (x, y), "crossentropy", options, learnables_reduction_goal=0.3,
        learnables_reduction_increment=0.1, verbosity_level="off",
    )  # fmt: skip
    assert info.stop_reason == GOAL_REACHED and info.reduction >= 0.3
    history = info.pruning_history
    assert history["learnables"].iloc[-1] == n_params(pruned) <= 0.7 * n_params(model)
    assert len(history) >= 3 and len(info.training_history) > 0 and len(info.validation_history) > 0
    assert history["val_accuracy"].notna().all()
    pruned.train()
    pruned(x[:4]).sum().backward()  # the smaller network trains and runs in both modes
    pruned.eval()
    with torch.no_grad():
        assert pruned(x[:4]).shape == (4, 5)
    assert network_metrics(pruned, x[:1], repeats=1).macs < network_metrics(model, x[:1], repeats=1).macs


class SqueezeExcite(nn.Module):
    """The classic SE block written with sizes read from the input: ``b, c, _, _ = x.size()``."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3)
        self.fc1, self.fc2 = nn.Linear(channels, 4), nn.Linear(4, channels)
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        x = self.conv(x)
        b, c, _, _ = x.size()
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        return self.head((x * y).mean((2, 3)))


class BorrowedWidth(nn.Module):
    """A tensor reshaped by the channel count of another one, as attention code does with the
    embedding width: equal widths are pruned together; otherwise both stay whole."""

    def __init__(self, width_b):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 8, 3), nn.Conv2d(3, width_b, 3)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        a, b = self.conv_a(x), self.conv_b(x)
        n, c = a.shape[0], a.shape[1]
        tokens = b.permute(0, 2, 3, 1).reshape(n, -1, c).mean(1)
        return self.head(torch.cat([a.mean((2, 3)), tokens.reshape(n, -1)], dim=1))


def test_sizes_read_from_a_tensor_couple_or_fix_the_channels_they_count():
    x = torch.randn(2, 3, 8, 8)
    se = TaylorPrunableNetwork(SqueezeExcite(8), x)
    assert set(se.prunable_layer_names) == {"conv", "fc1", "fc2"}  # fc2's outputs are conv's channels
    assert ["conv", "fc2"] in se.layer_groups
    prune_twice_and_check(SqueezeExcite(8), x)
    same_width, _ = prune_twice_and_check(BorrowedWidth(8), x)
    assert same_width.layer_groups == [["conv_a", "conv_b"]]
    assert TaylorPrunableNetwork(BorrowedWidth(16), x).prunable_layer_names == []


class CachedBias(nn.Module):
    """What timm's LeViT / EfficientViT / TinyViT attention does: in eval mode, a tensor computed from a
    parameter is cached on the module (with gradients on, a non-leaf tensor deepcopy refuses)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bias_table = nn.Parameter(torch.randn(8))
        self.cache: dict[str, torch.Tensor] = {}

    def bias(self) -> torch.Tensor:
        if self.training:
            return self.bias_table * 2
        if "bias" not in self.cache:
            self.cache["bias"] = self.bias_table * 2
        return self.cache["bias"]

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x))).mean((2, 3)) + self.bias()


def test_a_cached_non_leaf_tensor_neither_stops_wrapping_nor_extraction_after_eval_mode_scoring():
    torch.manual_seed(0)
    model, x = CachedBias().eval(), torch.randn(2, 3, 8, 8)
    model(x)  # an eval-mode forward with gradients on fills the cache
    cached = model.cache["bias"]
    pnet = TaylorPrunableNetwork(model, x)
    prune_fraction_by_taylor(pnet.eval(), x, 0.3)  # eval-mode scoring fills the wrapper's own cache too
    assert_exact(pnet, x)
    assert model.cache["bias"] is cached and cached.grad_fn is not None  # the user's model is unchanged
