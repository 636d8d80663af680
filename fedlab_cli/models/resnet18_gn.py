"""SSFL's CIFAR ResNet-18 with GroupNorm (``customized_resnet18`` in riohib/SSFL@83fc11d).

A 3x3 stem at stride 1 with no max-pool, four stages of two BasicBlocks (64, 128, 256, 512
channels; strides 1, 2, 2, 2), a 4x4 average pool and a linear head. Every normalisation is
GroupNorm with 32 groups, so the model has no running statistics: nothing in it depends on
a client's batch, which is why SSFL uses it in federated training.

Module names are the official ones, so state_dict keys match SSFL checkpoints: the GroupNorms
keep the names ``bn1``/``bn2``/``shortcut.1`` of the BatchNorms they replace there, the stages are
``layer1..layer4`` and the head is ``linear``. Weights keep PyTorch's default init, as there.

Built for 32x32 inputs: the last stage leaves 512x4x4, which the 4x4 pool turns into 512 features.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

GROUPS = 32
_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride of the first block)
_BLOCKS_PER_STAGE = 2


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with SSFL's 32 groups (affine, PyTorch's default eps)."""
    return nn.GroupNorm(num_groups=GROUPS, num_channels=channels)


class BasicBlockGN(nn.Module):
    """conv3x3-GN-ReLU-conv3x3-GN plus a shortcut (1x1 conv + GN where the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = group_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = group_norm(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), group_norm(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18GN(nn.Module):
    """The CIFAR ResNet-18 of SSFL: 11 173 962 parameters for 10 classes."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = group_norm(64)
        planes = 64
        for k, (width, stride) in enumerate(_STAGES, start=1):
            blocks = []
            for b in range(_BLOCKS_PER_STAGE):
                blocks.append(BasicBlockGN(planes, width, stride if b == 0 else 1))
                planes = width
            self.add_module(f"layer{k}", nn.Sequential(*blocks))
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(out)


def resnet18_gn(num_classes: int, in_channels: int = 3) -> nn.Module:
    """SSFL's ResNet-18 (GroupNorm, 3x3 stem, no max-pool) for 32x32 images."""
    return ResNet18GN(num_classes=num_classes, in_channels=in_channels)
