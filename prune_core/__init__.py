"""Structured Taylor pruning of PyTorch convolutional networks."""

from prune_core.compress import PruningInfo, compress_network
from prune_core.io import load_pruned, save_pruned
from prune_core.options import TrainingOptions
from prune_core.prunable import TaylorPrunableNetwork

__all__ = ["PruningInfo", "TaylorPrunableNetwork", "TrainingOptions", "compress_network", "load_pruned", "save_pruned"]
