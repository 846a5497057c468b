"""Exactness and coverage on real architectures, with random weights on CPU."""

import pytest
import torch
import torchvision
from torch import nn

from prune_core import TaylorPrunableNetwork
from prune_core.models import DigitsCNN, SequenceCNN
from tests.helpers import assert_exact, n_params, prune_fraction_by_taylor

TORCHVISION = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "vgg11_bn",
    "densenet121",
    "efficientnet_b0",
    "regnet_x_400mf",
    "squeezenet1_1",
    "shufflenet_v2_x0_5",
]


def _check(model: nn.Module, x: torch.Tensor) -> TaylorPrunableNetwork:
    """Taylor-score and prune 30% of the units in steps; the extracted network is exact."""
    pnet = TaylorPrunableNetwork(model.eval(), x)
    before, start = pnet.learnables, pnet.num_prunables
    assert before == n_params(model)
    assert start > 0
    prune_fraction_by_taylor(pnet, x, 0.3)
    small = assert_exact(pnet, x)
    assert n_params(small) < before
    return pnet


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_prune_exactly(name):
    model = getattr(torchvision.models, name)(num_classes=10)
    _check(model, torch.randn(2, 3, 64, 64))


def test_plain_cnn():
    pnet = _check(DigitsCNN(), torch.randn(4, 1, 8, 8))
    assert pnet.prunable_layer_names == ["features.0", "features.3", "features.7"]


def test_conv1d_sequence_classifier():
    pnet = _check(SequenceCNN(), torch.randn(4, 1, 40))
    assert len(pnet.prunable_layer_names) == 3


def test_all_filters_of_resnet18_are_prunable_and_residual_convs_share_a_group():
    pnet = TaylorPrunableNetwork(torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 64, 64), criterion="l1")
    assert len(pnet.prunable_layer_names) == 20
    stream = {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    groups = {tuple(pnet._groups_of(name)) for name in stream}
    assert len(groups) == 1
    pnet.update_prunables(max_to_prune=pnet.num_prunables + 10)
    assert pnet.num_prunables == 0
    small = pnet.to_module()
    assert {small.get_submodule(name).out_channels for name in stream} == {1}
    assert small.fc.in_features == 1
