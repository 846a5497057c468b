"""Built-in reference networks and a by-name builder (including torchvision models)."""

from prune_core.models.registry import BUILTIN_MODELS, build_model, model_names, torchvision_model_names
from prune_core.models.resnet_cifar import CifarResNet, resnet20, resnet56
from prune_core.models.small import DigitsCNN, SequenceCNN

__all__ = [
    "BUILTIN_MODELS",
    "CifarResNet",
    "DigitsCNN",
    "SequenceCNN",
    "build_model",
    "model_names",
    "resnet20",
    "resnet56",
    "torchvision_model_names",
]
