"""Synthetic stand-ins for the real datasets, for speed runs where the real files are absent.

``synthetic_<name>`` has the image shape, class count, pool sizes and (through its name) the
training and test transforms of ``<name>``, so a run on it does exactly the work a real run does:
only the pixels differ. Each variant is generated from the fixed seed ``SEED``, so every machine
gets the same pools, the same partition for a given ``seed``, and the same numbers.

An image is half a class template, half noise: ``template[label] // 2 + noise // 2``, where the
templates are smooth random colour fields (bilinearly upsampled 4x4 grids) and the noise is
uniform. A model can therefore learn the classes, which keeps accuracies meaningful as a sanity
check in a benchmark, while no two images are equal. Labels are balanced over the classes and
shuffled. Noise bytes are drawn as int64 words and read as bytes (little-endian order, as on
every platform torch ships for), eight pixels per draw: generation is memory speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fedlab_cli.data.base import ImageDataset

ProgressFn = Callable[[str, int, int], None]

SEED = 20_240_601
_CHUNK = 8192  # images generated per step: bounds the int16 working memory
_GRID = 4  # template resolution before upsampling


@dataclass(frozen=True)
class SyntheticVariant:
    """The shape of a real dataset that a synthetic one copies."""

    name: str
    real: str
    image_shape: tuple[int, int, int]
    num_classes: int
    train_pool: int
    test_pool: int


VARIANTS: dict[str, SyntheticVariant] = {
    v.name: v
    for v in (
        SyntheticVariant("synthetic_cifar10", "cifar10", (3, 32, 32), 10, 50000, 10000),
        SyntheticVariant("synthetic_cifar100", "cifar100", (3, 32, 32), 100, 50000, 10000),
        SyntheticVariant("synthetic_tinyimagenet", "tinyimagenet", (3, 64, 64), 200, 100000, 10000),
    )
}


def synthetic_name(real: str) -> str:
    """The synthetic stand-in's name for a real dataset name."""
    return f"synthetic_{real}"


def load_synthetic(
    name: str, root: Path | None = None, download: bool = False, progress: ProgressFn | None = None
) -> ImageDataset:
    """The pools of variant ``name``; the loader arguments are accepted and ignored."""
    v = VARIANTS[name]
    return make_synthetic(
        v.name, v.image_shape, v.num_classes, v.train_pool, v.test_pool, SEED, progress
    )


def make_synthetic(
    name: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    train_pool: int,
    test_pool: int,
    seed: int = SEED,
    progress: ProgressFn | None = None,
) -> ImageDataset:
    """Class-template-plus-noise uint8 pools of any shape, generated from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    templates = class_templates(num_classes, image_shape, generator)
    train_labels = balanced_labels(train_pool, num_classes, generator)
    test_labels = balanced_labels(test_pool, num_classes, generator)
    total = train_pool + test_pool

    def report(done: int) -> None:
        if progress is not None:
            progress(f"generating {name}", done, total)

    train = images_for(templates, train_labels, generator, lambda d: report(d))
    test = images_for(templates, test_labels, generator, lambda d: report(train_pool + d))
    return ImageDataset(name, train, train_labels, test, test_labels, num_classes)


def class_templates(
    num_classes: int, image_shape: tuple[int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """One smooth uint8 colour field per class, ``[K, C, H, W]``."""
    channels, height, width = image_shape
    grid = torch.rand(num_classes, channels, _GRID, _GRID, generator=generator)
    smooth = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8)


def balanced_labels(count: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` labels, as equal per class as ``count`` allows, in random order."""
    labels = torch.arange(count, dtype=torch.int64) % num_classes
    return labels[torch.randperm(count, generator=generator)]


def images_for(
    templates: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    report: Callable[[int], None],
) -> torch.Tensor:
    """``template[label] // 2 + noise // 2`` for every label, chunk by chunk."""
    shape = templates.shape[1:]
    out = torch.empty(len(labels), *shape, dtype=torch.uint8)
    for start in range(0, len(labels), _CHUNK):
        chunk = labels[start : start + _CHUNK]
        out[start : start + len(chunk)] = (
            templates[chunk] // 2 + noise(len(chunk), shape, generator) // 2
        )
        report(start + len(chunk))
    return out


def noise(count: int, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Uniform uint8 noise ``[count, *shape]``, eight bytes per int64 draw."""
    numel = count * shape.numel()
    words = torch.empty((numel + 7) // 8, dtype=torch.int64)
    words.random_(-(2**63), 2**63 - 1, generator=generator)
    return words.view(torch.uint8)[:numel].view(count, *shape)
