"""Batched, on-device versions of the per-image torchvision transforms of the papers reproduced.

A *profile* names whose transforms a run uses; ``lips`` is the default.

``lips`` (the LIPS reference, REFERENCE.md §1, transform table), per dataset and in this order:

- ``cifar10``: ToTensor only, train and test (no augmentation, no normalization);
- ``cifar100``: train = HorizontalFlip(0.5) -> Rotation(15) -> ToTensor -> Normalize ->
  RandomCrop(32, padding=4) (crop last, on the normalized tensor, zero padding);
  test = ToTensor -> Normalize;
- ``tinyimagenet``: as cifar100 with the same CIFAR-100 constants, but no crop;
- ``mnist``, ``emnist``: ToTensor -> Normalize(0.5, 0.5) (LIPS has no protocol for them; this is
  FedPM's);
- ``digits``: ToTensor only (a flip would change a digit's identity).

``ssfl`` (riohib/SSFL@83fc11d, ``data_preprocessing/cifar10_partitioner.py`` and
``cifar100_partitioner.py``): train = RandomCrop(32, padding=4) on the raw image (zero fill) ->
HorizontalFlip(0.5) -> ToTensor -> Normalize, test = ToTensor -> Normalize, with SSFL's CIFAR-10
or CIFAR-100 mean and std; ``digits`` as under ``lips``.

``fedpm`` (BerivanIsik/sparse-random-networks, ``get_default_data_transforms``): ToTensor ->
Normalize(0.5, 0.5) on every channel, train and test, no augmentation, for ``mnist``,
``emnist``, ``cifar10`` and ``cifar100``; ``digits`` as under ``lips``.

A synthetic stand-in (``synthetic_<name>``) is transformed like ``<name>`` under every profile.

Here each step is one tensor op over the whole batch, on whatever device the images live on, and
every random draw comes from the caller's ``torch.Generator`` so a run is reproducible and can be
resumed from a saved generator state. Draw order per batch: flips, angles, crop offsets — or,
when the crop comes first (``ssfl``), crop offsets, then flips, as torchvision draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedlab_cli.data.synthetic import VARIANTS as SYNTHETIC_VARIANTS
from fedlab_cli.errors import FedlabError

BatchTransform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

CIFAR100_MEAN = (0.507, 0.487, 0.441)
CIFAR100_STD = (0.267, 0.256, 0.276)

# SSFL's constants, as its partitioner modules spell them.
SSFL_CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
SSFL_CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
SSFL_CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
SSFL_CIFAR100_STD = (0.2675, 0.2565, 0.2761)

# FedPM's Normalize(mean=0.5, std=0.5), which torchvision broadcasts over the channels.
HALF = 0.5

DEFAULT_PROFILE = "lips"


@dataclass(frozen=True)
class Pipeline:
    """One dataset's transform: uint8 ``[B, C, H, W]`` in, float32 of the same shape out.

    Steps run in the LIPS reference order: flip, rotation (both on 0..255 values, zero fill),
    scale to [0, 1], normalize, then the padded random crop. With ``crop_first`` the padded crop
    runs before everything else instead, on the raw 0..255 image (so its zero padding is black,
    and normalization then moves it like any black pixel), as torchvision's ``RandomCrop``
    placed first in a ``Compose`` does.
    """

    flip: bool = False
    rotate_degrees: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_padding: int = 0
    crop_first: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        _check_batch(images)
        return self.apply(images, self.draw(len(images), generator, images.device))

    def draw(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> list[torch.Tensor]:
        """The per-sample random draws of one batch, in a fixed order: flips, angles, offsets
        (with ``crop_first``: offsets, flips, angles — the order the steps run in).

        Split from ``apply`` so a strategy can draw a whole round ahead, in this same order.
        """
        draws = []
        crop_first = bool(self.crop_padding) and self.crop_first
        if crop_first:
            draws.extend(random_offsets(batch, 2 * self.crop_padding, generator, device))
        if self.flip:
            draws.append(random_flips(batch, generator, device))
        if self.rotate_degrees:
            draws.append(random_angles(batch, self.rotate_degrees, generator, device))
        if self.crop_padding and not crop_first:
            draws.extend(random_offsets(batch, 2 * self.crop_padding, generator, device))
        return draws

    def apply(self, images: torch.Tensor, draws: list[torch.Tensor]) -> torch.Tensor:
        """The transform of a uint8 batch with its draws given (as ``draw`` returns them)."""
        x = images.float()
        pending = iter(draws)
        crop_first = bool(self.crop_padding) and self.crop_first
        if crop_first:
            tops, lefts = next(pending), next(pending)
            x = padded_crop(x, self.crop_padding, tops, lefts)
        if self.flip:
            x = horizontal_flip(x, next(pending))
        if self.rotate_degrees:
            x = rotate(x, next(pending))
        x = x.div(255.0)
        if self.mean is not None and self.std is not None:
            x = normalize(x, self.mean, self.std)
        if self.crop_padding and not crop_first:
            tops, lefts = next(pending), next(pending)
            x = padded_crop(x, self.crop_padding, tops, lefts)
        return x


_TO_TENSOR = Pipeline()
_LIPS_CIFAR100_TEST = Pipeline(mean=CIFAR100_MEAN, std=CIFAR100_STD)


def _half(channels: int) -> Pipeline:
    """ToTensor -> Normalize(0.5, 0.5) on every channel (FedPM)."""
    return Pipeline(mean=(HALF,) * channels, std=(HALF,) * channels)


def _ssfl(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Pipeline, Pipeline]:
    """SSFL's CIFAR pair: crop on the raw image, flip, ToTensor, Normalize; test normalizes."""
    train = Pipeline(flip=True, mean=mean, std=std, crop_padding=4, crop_first=True)
    return train, Pipeline(mean=mean, std=std)


# profile -> dataset -> (train transform, test transform)
_PROFILES: dict[str, dict[str, tuple[Pipeline, Pipeline]]] = {
    "lips": {
        "cifar10": (_TO_TENSOR, _TO_TENSOR),
        "cifar100": (
            Pipeline(
                flip=True, rotate_degrees=15.0, mean=CIFAR100_MEAN, std=CIFAR100_STD, crop_padding=4
            ),
            _LIPS_CIFAR100_TEST,
        ),
        "tinyimagenet": (
            Pipeline(flip=True, rotate_degrees=15.0, mean=CIFAR100_MEAN, std=CIFAR100_STD),
            _LIPS_CIFAR100_TEST,
        ),
        "digits": (_TO_TENSOR, _TO_TENSOR),
        "mnist": (_half(1), _half(1)),
        "emnist": (_half(1), _half(1)),
    },
    "ssfl": {
        "cifar10": _ssfl(SSFL_CIFAR10_MEAN, SSFL_CIFAR10_STD),
        "cifar100": _ssfl(SSFL_CIFAR100_MEAN, SSFL_CIFAR100_STD),
        "digits": (_TO_TENSOR, _TO_TENSOR),
    },
    "fedpm": {
        "mnist": (_half(1), _half(1)),
        "emnist": (_half(1), _half(1)),
        "cifar10": (_half(3), _half(3)),
        "cifar100": (_half(3), _half(3)),
        "digits": (_TO_TENSOR, _TO_TENSOR),
    },
}
# The synthetic stand-ins (fedlab_cli.data.synthetic) are transformed like the dataset they copy,
# so a speed run on them does the real run's augmentation work.
for _table in _PROFILES.values():
    for _variant in SYNTHETIC_VARIANTS.values():
        if _variant.real in _table:
            _table[_variant.name] = _table[_variant.real]

PROFILES = tuple(_PROFILES)


def train_transform(
    dataset: str, augment: bool, *, profile: str = DEFAULT_PROFILE
) -> BatchTransform:
    """The profile's training transform; with ``augment=False`` it is the test transform."""
    train, test = _pair(dataset, profile)
    return train if augment else test


def test_transform(dataset: str, *, profile: str = DEFAULT_PROFILE) -> BatchTransform:
    """The profile's evaluation transform (deterministic; the generator is not used)."""
    return _pair(dataset, profile)[1]


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def random_flips(
    batch: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Which samples to flip: bool ``[B]``, each True with probability 0.5."""
    return torch.rand(batch, generator=generator, device=device) < 0.5


def random_angles(
    batch: int, degrees: float, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Per-sample angles uniform in ``[-degrees, degrees]``, like ``RandomRotation(degrees)``."""
    return (torch.rand(batch, generator=generator, device=device) * 2.0 - 1.0) * degrees


def random_offsets(
    batch: int, span: int, generator: torch.Generator | None, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop corners ``(top, left)``, each uniform over the integers ``0..span``."""
    tops = torch.randint(0, span + 1, (batch,), generator=generator, device=device)
    lefts = torch.randint(0, span + 1, (batch,), generator=generator, device=device)
    return tops, lefts


def horizontal_flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples where ``mask`` is True; the others are unchanged."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its own angle, counter-clockwise for positive degrees.

    Same semantics as torchvision's ``rotate(img, angle, NEAREST)`` with the defaults of
    ``RandomRotation``: about the image centre, nearest neighbour, no expand, zero fill. Each
    output pixel centre is mapped back into the input by the inverse rotation and takes the
    nearest input pixel. Integer dtypes go through float and back (exact: no interpolation).
    """
    batch, _, height, width = images.shape
    radians = degrees.to(device=images.device, dtype=torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zeros = torch.zeros_like(cos)
    # Inverse map in centred pixel coordinates with y pointing down: a counter-clockwise turn on
    # screen samples input (x, y) = (cos*x' - sin*y', sin*x' + cos*y'). affine_grid works in
    # coordinates normalised by half-width and half-height, hence the aspect factors.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (height / width), zeros], dim=-1),
            torch.stack([sin * (width / height), cos, zeros], dim=-1),
        ],
        dim=1,
    )
    source = images if images.is_floating_point() else images.float()
    grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    out = F.grid_sample(
        source, grid.to(source.dtype), mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out if images.is_floating_point() else out.round().to(images.dtype)


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """``(x - mean) / std`` per channel, as torchvision's ``Normalize``."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def padded_crop(
    images: torch.Tensor, padding: int, tops: torch.Tensor, lefts: torch.Tensor
) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then cut each sample's ``H x W`` window at
    ``(tops[b], lefts[b])`` of the padded image — ``RandomCrop(size, padding)`` in one gather."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    rows = (tops.to(device).view(-1, 1) + torch.arange(height, device=device)).view(
        batch, 1, height, 1
    )
    cols = (lefts.to(device).view(-1, 1) + torch.arange(width, device=device)).view(
        batch, 1, 1, width
    )
    samples = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    chans = torch.arange(channels, device=device).view(1, channels, 1, 1)
    return padded[samples, chans, rows, cols]


def _check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected a uint8 [B, C, H, W] batch, got {images.dtype} {tuple(images.shape)}"
        )


def _pair(dataset: str, profile: str) -> tuple[Pipeline, Pipeline]:
    """The (train, test) pipelines of ``dataset`` under ``profile``, or a one-line error."""
    if profile not in _PROFILES:
        known = ", ".join(sorted(_PROFILES))
        raise FedlabError(
            f"data.transforms: unknown transform profile '{profile}' (known: {known})"
        )
    table = _PROFILES[profile]
    if dataset not in table:
        known = ", ".join(sorted(table))
        raise FedlabError(
            f"data.dataset: no transform for dataset '{dataset}' under profile '{profile}' "
            f"(known: {known})"
        )
    return table[dataset]
