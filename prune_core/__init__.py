"""Structured Taylor pruning of PyTorch convolutional networks."""

from prune_core.analysis import NetworkAnalysis, analyze_network
from prune_core.compress import compress_network
from prune_core.io import load_pruned, save_pruned
from prune_core.loaded import LoadedNetwork
from prune_core.metrics import NetworkMetrics, compare_networks, network_metrics
from prune_core.onnx_export import export_onnx
from prune_core.options import TrainingOptions
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.results import IterationResult, PruningInfo

__all__ = [
    "IterationResult",
    "LoadedNetwork",
    "NetworkAnalysis",
    "NetworkMetrics",
    "PruningInfo",
    "TaylorPrunableNetwork",
    "TrainingOptions",
    "analyze_network",
    "compare_networks",
    "compress_network",
    "export_onnx",
    "load_pruned",
    "network_metrics",
    "save_pruned",
]
