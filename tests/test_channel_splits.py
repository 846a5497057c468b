"""Channels that are stacked, concatenated and split again: chunks pruned in step, a layer's
units made of parts where its output is split, literal split sizes kept whole."""

import torch
import torch.nn.functional as F
from torch import nn

from prune_core import TaylorPrunableNetwork
from tests.helpers import prune_twice_and_check


class StackedPaths(nn.Module):
    """Selective-kernel style: two paths stacked on a new dim, weighted per path, summed."""

    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(12, 4)
        self.path_a, self.path_b = nn.Conv2d(8, 12, 3, padding=1), nn.Conv2d(8, 12, 5, padding=2)
        self.path_weight = nn.Parameter(torch.rand(1, 2, 12, 1, 1))

    def forward(self, x):
        x = F.relu(self.stem(x))
        paths = torch.stack([self.path_a(x), self.path_b(x)], dim=1)  # (B, 2, 12, H, W)
        return self.head((paths * self.path_weight).sum(1).mean((2, 3)))


def test_stacked_paths_share_their_channels_and_prune_exactly():
    model, x = StackedPaths(), torch.randn(2, 3, 8, 8)
    pnet = TaylorPrunableNetwork(model, x)
    assert ["path_a", "path_b"] in pnet.layer_groups
    assert "stem" in pnet.prunable_layer_names
    _, small = prune_twice_and_check(model, x)
    assert small.path_weight.shape[2] == small.path_a.out_channels == small.path_b.out_channels


class ConcatThenSplit(nn.Module):
    """Two convs concatenated, then split back along channels by ``how``."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv_a, self.conv_b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.conv_c, self.conv_d, self.head = nn.Conv2d(8, 6, 3), nn.Conv2d(8, 6, 3), nn.Linear(6, 2)

    def forward(self, x):
        y = torch.cat([F.relu(self.conv_a(x)), F.relu(self.conv_b(x))], dim=1)
        p, q = y.chunk(2, dim=1) if self.how == "chunk" else y.split(8, dim=1)
        return self.head((self.conv_c(p) + self.conv_d(q)).mean((2, 3)))


def test_a_split_into_equal_chunks_prunes_the_chunks_in_step_and_a_literal_split_size_fixes_them():
    x = torch.randn(2, 3, 8, 8)
    pnet, small = prune_twice_and_check(ConcatThenSplit("chunk"), x)
    assert ["conv_a", "conv_b"] in pnet.layer_groups  # unequal halves would move the chunk boundary
    assert small.conv_a.out_channels == small.conv_b.out_channels < 8
    pnet = TaylorPrunableNetwork(ConcatThenSplit("split"), x)
    assert not {"conv_a", "conv_b"} & set(pnet.prunable_layer_names)  # split(8) stays 8 in the pruned network


class GluNet(nn.Module):
    """A gated MLP whose one Linear makes both halves: ``a, b = fc1(x).chunk(2, -1)`` (GLU, SwiGLU)."""

    def __init__(self):
        super().__init__()
        self.embed, self.fc1, self.fc2, self.head = nn.Linear(6, 8), nn.Linear(8, 24), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = self.embed(x)
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.head((x + self.fc2(F.silu(gate) * value)).mean(1))


class PerPathWeights(nn.Module):
    """Selective-kernel attention: one conv makes a weight per path and channel, viewed as (paths, channels)."""

    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(12, 5)
        self.path_a, self.path_b = nn.Conv2d(8, 12, 3, padding=1), nn.Conv2d(8, 12, 5, padding=2)
        self.select = nn.Conv2d(8, 24, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        paths = torch.stack([self.path_a(x), self.path_b(x)], dim=1)
        weights = self.select(x.mean((2, 3), keepdim=True)).view(x.shape[0], 2, -1, 1, 1).softmax(dim=1)
        return self.head((paths * weights).sum(1).mean((2, 3)))


def test_a_layer_whose_output_is_split_in_parts_prunes_the_parts_in_step():
    x = torch.randn(2, 5, 6)
    pnet, small = prune_twice_and_check(GluNet(), x)
    assert "fc1" in pnet.prunable_layer_names and len(pnet.graph.layers["fc1"].out_layout) == 2
    assert small.fc1.out_features == 2 * small.fc2.in_features < 24
    pnet, small = prune_twice_and_check(PerPathWeights(), torch.randn(2, 3, 8, 8))
    assert ["path_a", "path_b", "select"] in pnet.layer_groups
    assert small.select.out_channels == 2 * small.path_a.out_channels < 24


def test_split_parts_score_each_unit_from_both_of_its_parts():
    model, x = GluNet(), torch.randn(2, 5, 6)
    pnet = TaylorPrunableNetwork(model, x, criterion="l1")
    (group,) = [g for g, names in enumerate(pnet.layer_groups) if names == ["fc1"]]
    norms = model.fc1.weight.detach().abs().sum(1)
    expected = norms[:12] + norms[12:]  # unit u is row u of the gate half and row u of the value half
    assert torch.allclose(pnet.group_scores()[group], expected / expected.norm(), atol=1e-6)
