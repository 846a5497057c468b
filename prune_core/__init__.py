"""Structured Taylor pruning of PyTorch convolutional networks."""

from prune_core.prunable import TaylorPrunableNetwork

__all__ = ["TaylorPrunableNetwork"]
