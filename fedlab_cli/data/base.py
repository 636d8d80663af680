"""The in-memory form every dataset is decoded into once: uint8 image tensors plus labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class ImageDataset:
    """Train and test pools of one dataset, decoded to uint8 ``[N, C, H, W]`` and int64 labels.

    Sample order is the reference order (REFERENCE.md decision 11), because the Dirichlet
    partition picks samples by position in these pools.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Channels, height, width of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same pools on another device (the training device keeps them resident)."""
        return ImageDataset(
            name=self.name,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
            num_classes=self.num_classes,
        )


@dataclass(frozen=True)
class RawSource:
    """The raw release files a decoded cache is made from, and the pool sizes they must give.

    The cache records the files' names, sizes and modification times, so replaced or edited raw
    files make it stale; ``train``/``test`` (None where the files alone decide) catch a cache
    decoded from short files.
    """

    folder: str
    files: Callable[[Path], list[Path]]
    train: int | None
    test: int | None
