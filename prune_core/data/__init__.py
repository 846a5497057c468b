"""Built-in datasets that need no download."""

from prune_core.data.digits import load_digits_tensors

__all__ = ["load_digits_tensors"]
