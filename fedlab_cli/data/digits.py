"""scikit-learn's bundled 8x8 handwritten digits: an offline dataset for quickstarts and tests.

The data ships inside scikit-learn (1 797 images, values 0..16), so it never needs a download.
Pixels are rescaled to uint8 as ``round(v * 255 / 16)`` (0 -> 0, 16 -> 255; the one tie, v = 8,
rounds half to even, giving 128), shape ``[N, 1, 8, 8]``.

Pool split, fixed so that partitions are reproducible: **train pool = the first 1 297 samples,
test pool = the last 500**, in the order ``sklearn.datasets.load_digits()`` returns them.
Both pools contain all 10 classes.

Digits are not written to the tensor cache: loading them takes milliseconds, and not caching
means the quickstart needs no writable data root.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedlab_cli.data.base import ImageDataset

ProgressFn = Callable[[str, int, int], None]

TRAIN_POOL = 1297
TEST_POOL = 500


def load_digits(root: Path, download: bool, progress: ProgressFn | None = None) -> ImageDataset:
    """The digits pools; ``root``, ``download`` and ``progress`` are accepted for the common
    loader signature and ignored (the data is bundled, decoding is instant)."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = torch.from_numpy(to_uint8(bunch.images)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return ImageDataset(
        name="digits",
        train_images=images[:TRAIN_POOL].contiguous(),
        train_labels=labels[:TRAIN_POOL].contiguous(),
        test_images=images[TRAIN_POOL:].contiguous(),
        test_labels=labels[TRAIN_POOL:].contiguous(),
        num_classes=10,
    )


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Map digit intensities 0..16 onto 0..255."""
    return np.rint(np.asarray(values, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)
