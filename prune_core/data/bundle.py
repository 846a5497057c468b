"""What a built data set is: train and validation sets in memory, and the images' served form."""

from __future__ import annotations

from collections.abc import Callable
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


AUGMENTATIONS = ("none", "crop_flip")
"""``crop_flip``: a random crop of the image padded by 4 zero pixels (after normalising) and a random
horizontal flip, the usual CIFAR training recipe, drawn from torch's global generator."""


def _augmentation(augment: str, size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r}: use one of {', '.join(AUGMENTATIONS)}")
    if augment == "none":
        return None
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()])


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` in memory, served as ``((x / 255 - mean) / std, label)`` in float32.

    ``repeat_channels`` repeats the channels that many times after normalising (grayscale to RGB);
    ``augment`` (one of :data:`AUGMENTATIONS`) transforms every image served.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, stats: Stats, repeat_channels: int = 1, augment: str = "none"
    ) -> None:
        self.images, self.labels, self.repeat_channels = images, labels, repeat_channels
        self.mean = torch.tensor(stats[0], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(stats[1], dtype=torch.float32).view(-1, 1, 1)
        self.transform = _augmentation(augment, tuple(images.shape[-2:]))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((self.images[index].float() / 255 - self.mean) / self.std).repeat(self.repeat_channels, 1, 1)
        return (x if self.transform is None else self.transform(x)), self.labels[index]


def image_bundle(
    train: Pair, val: Pair, num_classes: int, stats: Stats, grayscale_to_rgb: bool, augment: str = "none"
) -> DataBundle:
    """Train and validation images served normalised by ``stats``; grayscale repeated to RGB if asked; the
    training images transformed by ``augment`` (one of :data:`AUGMENTATIONS`), the validation ones not."""
    repeat = 3 if grayscale_to_rgb and train[0].shape[1] == 1 else 1
    train_ds = ImageTensorDataset(*train, stats, repeat, augment)
    return DataBundle(train_ds, ImageTensorDataset(*val, stats, repeat), num_classes, tuple(train_ds[0][0].shape))
