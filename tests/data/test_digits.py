"""scikit-learn digits: fixed pool split and pixel scaling."""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits as sklearn_load_digits

from fedlab_cli.data import digits
from fedlab_cli.data.registry import DATASETS, load_dataset


def test_pool_sizes_shapes_and_labels(tmp_path: Path) -> None:
    ds = load_dataset("digits", tmp_path, download=False)
    bunch = sklearn_load_digits()
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.train_images.shape == (1297, 1, 8, 8) and ds.test_images.shape == (500, 1, 8, 8)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.train_labels.tolist() == bunch.target[:1297].tolist()
    assert ds.test_labels.tolist() == bunch.target[1297:].tolist()
    assert set(ds.test_labels.tolist()) == set(range(10))
    info = DATASETS["digits"]
    assert (info.train_pool, info.test_pool, info.image_shape) == (1297, 500, (1, 8, 8))
    assert not any(tmp_path.iterdir())  # digits are never cached


def test_pixel_mapping(tmp_path: Path) -> None:
    ds = digits.load_digits(tmp_path, download=False)
    bunch = sklearn_load_digits()
    # Sample 0, row 0, column 4 is a 9 in the bunch: round(9 * 255 / 16) = round(143.4375) = 143.
    assert bunch.images[0, 0, 4] == 9.0 and int(ds.train_images[0, 0, 0, 4]) == 143
    # Row 3, column 5 is an 8, the one tie: 127.5 rounds half to even, to 128.
    assert bunch.images[0, 3, 5] == 8.0 and int(ds.train_images[0, 0, 3, 5]) == 128
    value = bunch.images[1300, 3, 4]
    assert int(ds.test_images[3, 0, 3, 4]) == round(value * 255 / 16)
    assert digits.to_uint8(torch.arange(17).numpy()).tolist()[::8] == [0, 128, 255]
