"""Built-in datasets that need no download."""

from prune_core.data.digits import load_digits_tensors
from prune_core.data.mnist1d import load_mnist1d_tensors

__all__ = ["load_digits_tensors", "load_mnist1d_tensors"]
