"""analyze_network, network_metrics / compare_networks, reference networks and data, progress bar."""

import sys

import pytest
import torch
import torchvision
from torch import nn

from prune_core import (
    TaylorPrunableNetwork,
    TrainingOptions,
    analyze_network,
    compare_networks,
    compress_network,
    network_metrics,
)
from prune_core.analysis import NOT_SELECTED
from prune_core.data import load_mnist1d_tensors
from prune_core.models import build_model, model_names

from .helpers import n_params


def test_analyze_resnet18_reports_groups_learnables_and_max_reduction():
    model, x = torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 64, 64)
    report = analyze_network(model, x)
    pnet = TaylorPrunableNetwork(model, x)
    assert report.learnables == n_params(model)
    assert report.minimum_learnables == pnet.minimum_learnables()
    assert 0.9 < report.max_reduction < 1.0
    assert report.layers["prunable"].sum() == 20 and len(report.layers) == 21
    fc = report.layers.set_index("layer").loc["fc"]  # a Linear is listed; the network's output is kept
    assert fc["type"] == "Linear" and not fc["prunable"] and fc["reason"] == "network output"
    # the stem conv and every block's second conv share the first stage's residual space
    stage1 = report.groups.loc[report.groups["layers"].apply(lambda names: "conv1" in names), "layers"].item()
    assert stage1 == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    assert report.groups["units"].tolist() == pnet.group_units
    assert report.groups["layers"].tolist() == pnet.layer_groups
    assert "Prunable layers: 20 of 21" in str(report)


def test_analyze_gives_reasons_for_what_is_not_prunable():
    model, x = torchvision.models.shufflenet_v2_x0_5(num_classes=10), torch.randn(1, 3, 64, 64)
    report = analyze_network(model, x)
    fixed = report.layers[~report.layers["prunable"]]
    assert len(fixed) > 0
    convs = fixed[fixed["type"] != "Linear"]  # the classifier: "network output"
    assert len(convs) > 0 and convs["reason"].str.contains("channel").all()
    assert all(name in str(report) for name in fixed["layer"])


def test_analyze_with_layer_names_marks_the_others_not_selected():
    model, x = build_model("digits_cnn"), torch.randn(1, 1, 8, 8)
    report = analyze_network(model, x, layer_names=["features.0"])
    assert report.prunable_layer_names == ["features.0"]
    assert set(report.layers.loc[~report.layers["prunable"], "reason"]) == {NOT_SELECTED, "network output"}
    with pytest.raises(ValueError, match="Valid layer names"):
        analyze_network(model, x, layer_names=["features.1"])


def test_network_metrics_counts_macs_memory_and_latency_exactly():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    metrics = network_metrics(model, torch.randn(3, 2, 8, 8), repeats=3)
    conv_macs = 3 * (4 * 6 * 6) * (2 * 3 * 3)
    linear_macs = 3 * 5 * 4 * 6 * 6
    assert metrics.macs == conv_macs + linear_macs
    assert metrics.learnables == n_params(model)
    assert metrics.parameter_memory_mb == pytest.approx(4 * n_params(model) / 2**20)
    assert metrics.latency_ms > 0
    assert model.training  # mode restored


def test_compare_networks_table_after_pruning():
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    model = build_model("digits_cnn", in_channels=1)
    pruned, info = compress_network(
        model,
        (x, y),
        options=TrainingOptions(mini_batch_size=32, device="cpu", seed=0),
        learnables_reduction_goal=0.5,
        learnables_reduction_increment=0.5,
        verbosity_level="off",
    )
    table = compare_networks(model, pruned, x[:4], accuracy=(90.0, 88.0), repeats=3)
    assert list(table.index) == ["original", "pruned", "percentage_change"]
    assert table.loc["pruned", "learnables"] == info.learnables
    change = table.loc["percentage_change"]
    assert change["learnables"] == pytest.approx(-100 * info.reduction)
    assert change["parameter_memory_mb"] == pytest.approx(change["learnables"])
    assert change["macs"] < -30
    assert change["accuracy"] == pytest.approx(100 * (88 - 90) / 90)


def test_reference_networks_by_name():
    resnet20 = build_model("resnet20")
    assert 0.26e6 < n_params(resnet20) < 0.28e6  # MATLAB's CIFAR-10 example network: 0.27 M
    assert n_params(build_model("resnet56")) > 3 * n_params(resnet20)
    assert build_model("resnet20")(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("mnist1d_cnn")(torch.randn(2, 1, 40)).shape == (2, 10)
    assert isinstance(build_model("mobilenet_v2", num_classes=7), torchvision.models.MobileNetV2)
    assert {"digits_cnn", "resnet56", "resnet18"} <= set(model_names())
    with pytest.raises(ValueError, match="'resnet21' is not a known model; did you mean resnet20"):
        build_model("resnet21")
    with pytest.raises(ValueError, match="in_channels=1"):
        build_model("resnet18", in_channels=1)
    with pytest.raises(ValueError, match="depth=21"):
        from prune_core.models import CifarResNet

        CifarResNet(21)


def test_mnist1d_is_generated_offline_and_deterministic():
    x, y, x_test, y_test = load_mnist1d_tensors(num_samples=500, seed=3)
    assert x.shape == (400, 1, 40) and x_test.shape == (100, 1, 40)
    assert set(y.tolist()) == set(range(10))
    again = load_mnist1d_tensors(num_samples=500, seed=3)
    assert torch.equal(x, again[0]) and torch.equal(y_test, again[3])
    assert not torch.equal(x, load_mnist1d_tensors(num_samples=500, seed=4)[0])


def test_summary_verbosity_draws_a_progress_bar_on_terminals(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    compress_network(
        build_model("digits_cnn"),
        (x, y),
        options=TrainingOptions(mini_batch_size=32, device="cpu", seed=0),
        learnables_reduction_goal=0.3,
        learnables_reduction_increment=0.1,
    )
    out = capsys.readouterr().out
    assert out.count("\rPruning [") >= 3
    assert "Compressed network has" in out.split("\rPruning [")[-1].split("\n", 1)[1]
