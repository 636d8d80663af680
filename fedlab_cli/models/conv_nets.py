"""FedPM's Conv-4/6/10 as plain dense networks.

They are ``Mask4CNN``/``Mask6CNN``/``Mask10CNN`` of BerivanIsik/sparse-random-networks
(``src/fedssm/models/masked_layers.py``) with ordinary layers in place of the masked ones.

Each is pairs of 3x3 'same' convolutions with ReLU, a 2x2 max-pool after every pair, then three
linear layers (256, 256, classes) with ReLU between them. Every conv and linear has a bias and
there is no normalisation, as in FedPM. The layers are plain ``nn.Conv2d``/``nn.Linear`` with
PyTorch's default init, so a method such as FedPM can swap them for its masked-score layers;
names follow FedPM (``conv1``.., ``dense1``..``dense3``) so its checkpoints read alike.

- ``conv4``: 1x28x28 (MNIST, EMNIST): 64, 64, pool, 128, 128, pool -> 6272 features.
- ``conv6``: 3x32x32 (CIFAR-10): 64, 64, pool, 128, 128, pool, 256, 256, pool -> 4096 features.
- ``conv10``: 3x32x32 (CIFAR-100): five pairs 64 .. 1024, five pools -> 1024 features.
- ``conv2_tiny``: 1x8x8 (the offline digits): 32, 32, pool, dense 128-128-classes, small
  enough for FedPM's quickstart on 2 CPU cores (not in FedPM; as a masked random network it
  learns the digits where a deeper Conv-4 of this width stays at chance within a few minutes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

_HIDDEN = 256


class PairedConvNet(nn.Module):
    """Conv pairs (each pair followed by a 2x2 max-pool), then dense 256-256-classes.

    ``side`` is the input's height and width; it fixes the flattened size the first dense layer
    expects (each pool halves it).
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        side: int,
        num_classes: int,
        in_channels: int,
        hidden: int = _HIDDEN,
    ) -> None:
        super().__init__()
        if len(widths) % 2:
            raise ValueError(f"conv widths come in pairs, got {widths}")
        channels = in_channels
        for i, width in enumerate(widths, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(channels, width, kernel_size=3, padding=1))
            channels = width
        self.num_convs = len(widths)
        out_side = side >> (len(widths) // 2)
        self.dense1 = nn.Linear(channels * out_side * out_side, hidden)
        self.dense2 = nn.Linear(hidden, hidden)
        self.dense3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.num_convs + 1):
            x = F.relu(getattr(self, f"conv{i}")(x))
            if i % 2 == 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = x.flatten(1)
        x = F.relu(self.dense1(x))
        x = F.relu(self.dense2(x))
        return self.dense3(x)


def conv4(num_classes: int, in_channels: int = 3) -> nn.Module:
    """FedPM's Conv-4 for 28x28 images (1 933 258 parameters with 1 channel, 10 classes)."""
    return PairedConvNet((64, 64, 128, 128), 28, num_classes, in_channels)


def conv6(num_classes: int, in_channels: int = 3) -> nn.Module:
    """FedPM's Conv-6 for 32x32 images (2 262 602 parameters with 10 classes)."""
    return PairedConvNet((64, 64, 128, 128, 256, 256), 32, num_classes, in_channels)


def conv10(num_classes: int, in_channels: int = 3) -> nn.Module:
    """FedPM's Conv-10 for 32x32 images (19 197 092 parameters with 100 classes)."""
    widths = (64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024)
    return PairedConvNet(widths, 32, num_classes, in_channels)


def conv2_tiny(num_classes: int, in_channels: int = 1) -> nn.Module:
    """One conv pair (32, 32) and dense 128-128 for 8x8 images (93 034 parameters, 10 classes)."""
    return PairedConvNet((32, 32), 8, num_classes, in_channels, hidden=128)
