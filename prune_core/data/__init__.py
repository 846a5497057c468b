"""Data sets held in memory: the built-in ones that need no download (scikit-learn's digits,
MNIST-1D), torchvision's CIFAR-10 / MNIST / FashionMNIST and folders of images, built from one
``data`` config group by :func:`build_data`."""

from prune_core.data.build import build_data
from prune_core.data.bundle import DataBundle, ImageTensorDataset
from prune_core.data.config import DATASETS
from prune_core.data.digits import load_digits_tensors
from prune_core.data.mnist1d import load_mnist1d_tensors

__all__ = ["DATASETS", "DataBundle", "ImageTensorDataset", "build_data", "load_digits_tensors", "load_mnist1d_tensors"]
