"""A loaded pruned network is an ordinary module: eval/train/to/parameters/state_dict, from a file,
from MLflow (prune_core.load_pruned and pyfunc), and as ONNX in onnxruntime."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import TaylorPrunableNetwork, export_onnx, load_pruned, save_pruned
from prune_core.models import DigitsCNN


@pytest.fixture
def pruned():
    """A pruned DigitsCNN (BatchNorm) with dropout on its features, in training mode."""
    x = torch.randn(8, 1, 8, 8)
    pnet = TaylorPrunableNetwork(DigitsCNN(width=8), x[:1], criterion="l1")
    pnet.update_prunables(max_to_prune=10)
    small = pnet.to_module()
    small.features.append(nn.Dropout(0.5))
    return small.train(), x


def test_saving_changes_nothing_in_the_network(pruned, tmp_path):
    model, x = pruned
    state, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    save_pruned(model, tmp_path / "m.pt2", x)
    assert model.training
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_loaded_network_follows_eval_and_train_like_the_original(pruned, tmp_path):
    model, x = pruned
    loaded = load_pruned(save_pruned(model, tmp_path / "m.pt2", x))
    assert not loaded.training and loaded.trainable
    assert list(loaded.state_dict()) == list(model.state_dict())
    model.eval()
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert torch.equal(loaded(x), loaded(x))  # eval: dropout off, BatchNorm uses running statistics
    loaded.train()
    model.train()
    assert loaded.training and all(m.training for m in loaded.modules())
    torch.manual_seed(3)
    out_loaded = loaded(x)
    torch.manual_seed(3)
    out_model = model(x)
    assert torch.allclose(out_loaded, out_model, atol=1e-6)  # same dropout mask, batch statistics
    bn_loaded, bn_model = loaded.get_submodule("features.1"), model.features[1]
    assert torch.allclose(bn_loaded.running_mean, bn_model.running_mean)  # updated in training mode
    assert int(bn_loaded.num_batches_tracked) == int(bn_model.num_batches_tracked) == 1
    assert not torch.equal(loaded(x), out_loaded)  # dropout is live


def test_loaded_network_fine_tunes_and_moves(pruned, digits, tmp_path):
    model, x = pruned
    loaded = load_pruned(save_pruned(model, tmp_path / "m.pt2", x)).train()
    x_train, y_train, _, _ = digits
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(loaded(x_train[:256]), y_train[:256])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    loaded.requires_grad_(False)
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.to(torch.float64).eval()
    assert loaded(x.double()).dtype == torch.float64
    assert loaded(x[:1].double()).shape == (1, 10)  # dynamic batch
    again = load_pruned(save_pruned(loaded.float(), tmp_path / "again.pt2", x))  # a loaded network saves again
    assert torch.allclose(again(x), loaded(x), atol=1e-6)


def test_file_from_torch_export_alone_is_inference_only(pruned, tmp_path):
    model, x = pruned
    model.eval()
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "plain.pt2")
    loaded = load_pruned(tmp_path / "plain.pt2")
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="eval-mode program only"):
        loaded.train()


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no pruned network at"):
        load_pruned(tmp_path / "nothing.pt2")


def test_mlflow_model_loads_trainable_and_predicts(pruned, tmp_path):
    import mlflow

    from sweeps import tracking

    model, x = pruned
    model.eval()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("loaded")
    with mlflow.start_run() as run:
        tracking.log_model(model, x[:2], "pruned_model")
    uri = f"runs:/{run.info.run_id}/pruned_model"
    loaded = load_pruned(uri)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    loaded.train()
    assert loaded(x).requires_grad
    predicted = mlflow.pyfunc.load_model(uri).predict(x.numpy())
    assert np.allclose(predicted, model(x).detach().numpy(), atol=1e-5)


def test_mlflow_model_loads_from_the_store_named_and_otherwise_fails_clearly(pruned, tmp_path):
    """A sweep's model URI is looked up in the store passed as ``tracking_uri``, whatever MLflow's
    current store; looked up in another store it is a clear error that says how to name the store."""
    import mlflow

    from sweeps import tracking

    model, x = pruned
    model.eval()
    store = f"sqlite:///{tmp_path}/sweep.db"
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("sweep")
    with mlflow.start_run() as run:
        tracking.log_model(model, x[:2], "pruned_model")
    uri = f"runs:/{run.info.run_id}/pruned_model"
    other = f"sqlite:///{tmp_path}/other.db"
    mlflow.set_tracking_uri(other)
    loaded = load_pruned(uri, tracking_uri=store)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
    assert mlflow.get_tracking_uri() == other
    with pytest.raises(FileNotFoundError, match=r"other\.db.*tracking_uri=") as missing:
        load_pruned(uri)
    assert not tracking.is_transient(missing.value)  # a sweep does not retry it for minutes


def test_onnx_export_agrees_in_onnxruntime_and_is_smaller(pruned, tmp_path):
    import onnxruntime

    model, x = pruned
    full = DigitsCNN(width=8)
    small_file = export_onnx(model, tmp_path / "pruned.onnx", x)
    full_file = export_onnx(full, tmp_path / "full.onnx", x)
    assert model.training  # left as it was
    assert small_file.stat().st_size < 0.85 * full_file.stat().st_size
    session = onnxruntime.InferenceSession(str(small_file))
    model.eval()
    for batch in (1, 7):
        inputs = torch.randn(batch, 1, 8, 8)
        (output,) = session.run(None, {"input": inputs.numpy()})
        assert output.shape == (batch, 10)
        assert np.allclose(output, model(inputs).detach().numpy(), atol=1e-4)
