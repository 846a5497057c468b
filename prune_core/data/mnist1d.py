"""MNIST-1D (Greydanus 2020): 40-sample 1-D digit signals, generated offline by the ``mnist1d`` package."""

from __future__ import annotations

import torch


def load_mnist1d_tensors(
    num_samples: int = 5000, seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_train, y_train, x_test, y_test)``: signals ``(N, 1, 40)``, labels ``(N,)``.

    The package's default generator arguments with ``num_samples`` and ``seed`` (42 gives the
    published data set); 80% train, 20% test.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"num_samples={num_samples!r} is not allowed; use an integer >= 10.")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)

    def signals(x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).unsqueeze(1)

    def labels(y) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.long)

    return signals(data["x"]), labels(data["y"]), signals(data["x_test"]), labels(data["y_test"])
