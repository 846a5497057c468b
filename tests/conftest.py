import os

import pytest
import torch
import torch.nn.functional as F

from prune_core.data import load_digits_tensors
from prune_core.models import DigitsCNN


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_environment():
    """Each test gets the environment it started with back: an in-process ``ray.init`` sets RAY_AUTH_MODE and
    a sweep sets MLFLOW_TRACKING_URI, which later tests' subprocesses would otherwise inherit."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits: (x_train, y_train, x_val, y_val) tensors."""
    return load_digits_tensors(seed=0)


@pytest.fixture(scope="session")
def trained(digits):
    """A DigitsCNN trained on the digits for 10 epochs (eval mode)."""
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    model = DigitsCNN(width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(10):
        for idx in torch.randperm(len(y_train)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU Ray instance in this process for a module's in-process sweeps, shut down after it: a Ray
    left running here would be taken by the next in-process ``ray.init`` or killed by ``ray stop``."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def mlflow_server(tmp_path):
    """An ``mlflow server`` on 127.0.0.1 with its store in the test's folder; yields its URL."""
    from .sweep_helpers import free_port, start_mlflow_server, stop_mlflow_server

    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(server)
