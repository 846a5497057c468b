"""What a built data set is: train and validation sets in memory, and the images' served form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

Pair = tuple[torch.Tensor, torch.Tensor]
Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class DataBundle:
    """Train and validation sets, with what a model needs to know about them."""

    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: tuple[int, ...]


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` in memory, served as ``((x / 255 - mean) / std, label)`` in float32.

    ``repeat_channels`` repeats the channels that many times after normalising (grayscale to RGB).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, stats: Stats, repeat_channels: int = 1) -> None:
        self.images, self.labels, self.repeat_channels = images, labels, repeat_channels
        self.mean = torch.tensor(stats[0], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(stats[1], dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[index].float() / 255 - self.mean) / self.std
        return x.repeat(self.repeat_channels, 1, 1), self.labels[index]


def image_bundle(train: Pair, val: Pair, num_classes: int, stats: Stats, grayscale_to_rgb: bool) -> DataBundle:
    """Train and validation images served normalised by ``stats``; grayscale repeated to RGB if asked."""
    repeat = 3 if grayscale_to_rgb and train[0].shape[1] == 1 else 1
    train_ds = ImageTensorDataset(*train, stats, repeat)
    return DataBundle(train_ds, ImageTensorDataset(*val, stats, repeat), num_classes, tuple(train_ds[0][0].shape))
