"""A small CNN for the offline digits quickstart (8x8 greyscale), shaped like its big siblings.

It keeps the structure the methods care about — a first conv, middle convs with BatchNorm, a
linear head — so FedBN and LIPS act on it as on VGG6 and ResNet, at a CPU-friendly size.
"""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """conv(16)-BN-ReLU, conv(32)-BN-ReLU-pool, conv(64)-BN-ReLU-pool, global pool, Linear."""

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def small_cnn(num_classes: int, in_channels: int = 1) -> SmallCNN:
    """3-conv BN CNN for the digits quickstart"""
    return SmallCNN(num_classes, in_channels)
