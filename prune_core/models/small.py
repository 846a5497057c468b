"""Small reference CNNs for the embedded default job and the tests."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(conv: nn.Module, channels: int, norm: type[nn.Module]) -> list[nn.Module]:
    return [conv, norm(channels), nn.ReLU(inplace=True)]


class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU blocks, global average pooling and a Linear head (8x8 digit images)."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), width, nn.BatchNorm2d),
            *_conv_bn_relu(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), 2 * width, nn.BatchNorm2d),
            nn.MaxPool2d(2),
            *_conv_bn_relu(nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), 2 * width, nn.BatchNorm2d),
        )
        self.classifier = nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class SequenceCNN(nn.Module):
    """A Conv1d sequence classifier (MATLAB's 1-D example shape): conv blocks, pooling, Linear."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(nn.Conv1d(in_channels, width, 5, padding=2), width, nn.BatchNorm1d),
            *_conv_bn_relu(nn.Conv1d(width, 2 * width, 5, padding=2), 2 * width, nn.BatchNorm1d),
            nn.MaxPool1d(2),
            *_conv_bn_relu(nn.Conv1d(2 * width, 2 * width, 3, padding=1), 2 * width, nn.BatchNorm1d),
            nn.AdaptiveAvgPool1d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))
