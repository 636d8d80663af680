"""The reference's ResNet6/8/10: a 7x7 stem, one BasicBlock per stage, a linear classifier."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

_STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with ``num_stages`` stages of one BasicBlock each (ResNet6 = 2, 8 = 3, 10 = 4).

    Parameter names (``conv1``, ``layers.k.0.shortcut.0``, ``classifier``) follow the reference.
    """

    def __init__(self, num_stages: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages, planes = [], 64
        for k, width in enumerate(_STAGE_WIDTHS[:num_stages]):
            stages.append(nn.Sequential(BasicBlock(planes, width, stride=1 if k == 0 else 2)))
            planes = width
        self.layers = nn.Sequential(*stages)
        self.classifier = nn.Linear(planes, num_classes)  # PyTorch's default init, as the reference
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(self.layers(out), 1).flatten(1)
        return self.classifier(out)


def resnet6(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet6: 7x7 stem + 2 BasicBlock stages (the reference's ResNet6)"""
    return ResNet(2, num_classes, in_channels)


def resnet8(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet8: 7x7 stem + 3 BasicBlock stages; CIFAR-100 in the LIPS paper"""
    return ResNet(3, num_classes, in_channels)


def resnet10(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet10: 7x7 stem + 4 BasicBlock stages; Tiny-ImageNet in the LIPS paper"""
    return ResNet(4, num_classes, in_channels)
