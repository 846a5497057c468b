"""Coupled channels and constructs that must not be pruned, on small hand-built networks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import TaylorPrunableNetwork
from tests.helpers import assert_exact, prune_fraction


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = x + self.b(F.relu(self.a(x)))
        return self.head(x.mean((2, 3)))


class ConcatNet(nn.Module):
    """SqueezeNet-fire-like: two expand convs concatenated and consumed by one conv."""

    def __init__(self):
        super().__init__()
        self.squeeze = nn.Conv2d(3, 6, 1)
        self.e1 = nn.Conv2d(6, 8, 1)
        self.e3 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.out = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        x = self.bn(torch.cat([self.e1(s), self.e3(s)], 1))
        x = F.adaptive_avg_pool2d(F.relu(self.out(x)), 4)
        return self.head(x.view(x.size(0), -1))


class GatedNet(nn.Module):
    """Depthwise conv followed by squeeze-excitation gating."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.bn = nn.BatchNorm2d(12)
        self.se_reduce = nn.Conv2d(12, 4, 1)
        self.se_expand = nn.Conv2d(4, 12, 1)
        self.project = nn.Conv2d(12, 6, 1)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.bn(self.dw(self.expand(x))))
        gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(F.adaptive_avg_pool2d(x, 1)))))
        x = self.project(x * gate)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.c = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.c(F.relu(self.g(F.relu(self.a(x)))))
        return self.head(x.mean((2, 3)))


class ShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = F.relu(self.a(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        x = self.c(F.relu(self.b(x)))
        return self.head(x.mean((2, 3)))


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        x = F.relu(self.b(F.relu(self.a(x))))
        return self.fc(x.view(-1, 64))


def test_residual_add_couples_the_convs_feeding_it():
    x = torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(ResidualNet(), x, criterion="l1")
    assert pnet._groups_of("stem") == pnet._groups_of("b") != pnet._groups_of("a")
    prune_fraction(pnet, 0.5)
    small = assert_exact(pnet, x)
    assert small.stem.out_channels == small.b.out_channels == small.bn.num_features == small.head.in_features


def test_concat_consumer_slices_the_right_input_channels():
    x = torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(ConcatNet(), x, criterion="random")
    assert set(pnet.prunable_layer_names) == {"squeeze", "e1", "e3", "out"}
    prune_fraction(pnet, 0.5, step=3)
    small = assert_exact(pnet, x)
    assert small.out.in_channels == small.e1.out_channels + small.e3.out_channels == small.bn.num_features


def test_depthwise_and_gating_are_coupled():
    x = torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(GatedNet(), x, criterion="random")
    assert pnet._groups_of("expand") == pnet._groups_of("dw") == pnet._groups_of("se_expand")
    prune_fraction(pnet, 0.5, step=2)
    small = assert_exact(pnet, x)
    assert small.dw.groups == small.dw.out_channels == small.expand.out_channels == small.se_expand.out_channels


def test_grouped_conv_prunes_whole_groups():
    x = torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(GroupedNet(), x, layer_names=["g"], criterion="random")
    assert pnet.prunable_layer_names == ["a", "g"]
    assert pnet.num_prunables == 3  # 4 groups of 4 channels, one must stay
    assert pnet.update_prunables(max_to_prune=2) == 2
    small = assert_exact(pnet, x)
    assert small.g.groups == 2 and small.g.out_channels == 4 * small.g.groups == small.a.out_channels


def test_channel_shuffle_makes_its_channels_non_prunable():
    x = torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(ShuffleNet(), x, criterion="random")
    assert pnet.prunable_layer_names == ["b", "c"]
    prune_fraction(pnet, 0.5, step=1)
    small = assert_exact(pnet, x)
    assert small.a.out_channels == 8 and small.b.out_channels < 8


def test_hard_coded_reshape_is_never_pruned():
    x = torch.randn(2, 1, 4, 4)
    pnet = TaylorPrunableNetwork(HardCodedView(), x, criterion="random")
    assert pnet.prunable_layer_names == ["a"]
    prune_fraction(pnet, 0.5, step=1)
    assert_exact(pnet, x)


def test_layer_names_restrict_pruning_to_named_convs_and_their_group():
    x = torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(ResidualNet(), x, layer_names=["b"], criterion="l1")
    assert pnet.prunable_layer_names == ["stem", "b"]
    prune_fraction(pnet, 0.5)
    small = assert_exact(pnet, x)
    assert small.a.out_channels == 8 and small.b.out_channels < 8


def test_unknown_layer_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"nope.*Valid layer names: \['stem', 'a', 'b'\]"):
        TaylorPrunableNetwork(ResidualNet(), torch.randn(1, 3, 8, 8), layer_names=["nope"])


def test_unknown_criterion_is_rejected():
    with pytest.raises(ValueError, match="criterion='fisher'"):
        TaylorPrunableNetwork(ResidualNet(), torch.randn(1, 3, 8, 8), criterion="fisher")


def test_channel_multiple_keeps_multiples_of_it_in_every_pruned_group():
    from prune_core.models import resnet20

    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    pnet = TaylorPrunableNetwork(model, x, criterion="l1", channel_multiple=8)
    widths = [int(keep.sum()) for keep in pnet._unit_masks().values()]
    target = pnet.learnables // 2
    assert pnet.prune_to_learnables(target) > 0 and pnet.learnables <= target
    kept = [int(keep.sum()) for keep in pnet._unit_masks().values()]
    assert any(k < w for k, w in zip(kept, widths, strict=True))
    assert all(k == w or k % 8 == 0 for k, w in zip(kept, widths, strict=True)), kept
    assert pnet.minimum_learnables() > TaylorPrunableNetwork(model, x, criterion="l1").minimum_learnables()
    pruned = assert_exact(pnet, x)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)  # resnet20's widths 16/32/64 are multiples of 8


def test_channel_multiple_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="channel_multiple"):
        TaylorPrunableNetwork(nn.Sequential(nn.Conv2d(1, 4, 3)), torch.randn(1, 1, 5, 5), channel_multiple=0)


@pytest.mark.parametrize("net", [ResidualNet, ConcatNet, GatedNet, GroupedNet, ShuffleNet])
def test_pruning_a_compacted_copy_is_recorded_on_the_original_filters(net):
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    record = TaylorPrunableNetwork(net(), x, criterion="random")
    prune_fraction(record, 0.3, step=1)
    compact = record.compacted(x)
    assert compact.learnables == record.learnables and compact.group_units == [
        units for units in record.group_units if units > 1
    ]
    learnables = compact.learnables
    prune_fraction(compact, 0.4, step=1)
    assert compact.learnables < learnables
    record.record_pruning_of(compact)
    # no training in between: the record, pruned on the original filters, is the same network
    expected, actual = record.to_module().state_dict(), compact.to_module().state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert_exact(record, x)


def test_group_reduction_mean_divides_each_group_by_its_layers_and_lets_residual_channels_go():
    from prune_core.models import resnet20

    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    summed = TaylorPrunableNetwork(model, x, criterion="l1")
    averaged = TaylorPrunableNetwork(model, x, criterion="l1", group_reduction="mean")
    sizes = [len(convs) for convs in summed.layer_groups]
    assert max(sizes) == 4  # a stage's residual channels: its first conv (or shortcut) and 3 block outputs
    for total, mean, size in zip(summed.group_scores(), averaged.group_scores(), sizes, strict=True):
        torch.testing.assert_close(mean, total / size)
    target = summed.learnables // 2
    for pnet in (summed, averaged):
        pnet.prune_to_learnables(target)
    residual = [g for g, size in enumerate(sizes) if size > 1]
    full = [len(keep) for keep in summed._unit_masks().values()]
    assert summed.group_units[residual[0]] == full[residual[0]]  # the sum protects stage 1's residual channels
    assert any(averaged.group_units[g] < full[g] for g in residual)
    assert_exact(averaged, x)


def test_unknown_group_reduction_is_rejected():
    with pytest.raises(ValueError, match="group_reduction='max'.*sum, mean"):
        TaylorPrunableNetwork(ResidualNet(), torch.randn(1, 3, 8, 8), group_reduction="max")


class Padded(nn.Module):
    """Padding between convs: of the spatial dims (channel-wise), or of the channel dim itself."""

    def __init__(self, pad_channels: bool):
        super().__init__()
        self.pad_channels = pad_channels
        self.conv1, self.pad = nn.Conv2d(3, 8, 3), nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(8 + 2 * pad_channels, 4, 3)

    def forward(self, x):
        x = self.pad(F.relu(self.conv1(x)))
        if self.pad_channels:
            x = F.pad(x, [0, 0, 0, 0, 1, 1])  # two zero channels: the channel count is no longer conv1's
        return self.conv2(F.pad(x, [1, 1, 1, 1], value=0.0))


@pytest.mark.parametrize("pad_channels", [False, True])
def test_spatial_padding_keeps_channels_prunable_and_padding_the_channel_dim_fixes_them(pad_channels):
    model, x = Padded(pad_channels), torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(model, x, criterion="random")
    assert ("conv1" in pnet.prunable_layer_names) is not pad_channels
    if not pad_channels:
        prune_fraction(pnet, 0.5)
        assert assert_exact(pnet, x).conv1.out_channels < 8
