"""VGG6 (the reference's ``vgg11_bn``, config 'A'): five conv-BN-ReLU-pool blocks, one linear."""

from __future__ import annotations

from torch import Tensor, nn

_WIDTHS = (64, 128, 256, 512, 512)


class VGG6(nn.Module):
    """Conv3x3 (with bias) -> BN -> ReLU -> MaxPool(2) five times, then Linear(512, classes).

    Built for 32x32 inputs: the last pool leaves 512x1x1. Module indices match the reference
    (``features.0``, ``features.4``, ... and ``classifier.0``) so checkpoints read alike.
    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for width in _WIDTHS:
            blocks += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Linear(channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def vgg6(num_classes: int, in_channels: int = 3) -> VGG6:
    """VGG6 (reference vgg11_bn 'A'), 32x32 input; CIFAR-10 in the LIPS paper"""
    return VGG6(num_classes, in_channels)
