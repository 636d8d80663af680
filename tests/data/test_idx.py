"""IDX decoding on files written byte by byte in the official format (struct, not our code)."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedlab_cli.data.idx import read_idx_images, read_idx_labels
from fedlab_cli.errors import DatasetUnavailableError, FedlabError


def _images_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def _labels_bytes(labels: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def test_images_are_rows_then_columns_as_stored(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    path = tmp_path / "img"
    raw = _images_bytes(images)
    path.write_bytes(raw)
    out = read_idx_images(path, 28)
    assert out.shape == (4, 28, 28) and out.dtype == np.uint8
    for n, r, c in [(0, 0, 0), (1, 0, 27), (2, 27, 0), (3, 13, 7)]:
        assert out[n, r, c] == raw[16 + n * 784 + r * 28 + c]  # byte offset from the spec


def test_gzipped_and_plain_decode_alike(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8)
    (tmp_path / "lab").write_bytes(_labels_bytes(labels))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(_labels_bytes(labels)))
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "lab"), labels)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / "lab.gz"), labels)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (_labels_bytes(np.zeros(3)), "magic number 0x00000801, expected 0x00000803"),
        (_images_bytes(np.zeros((2, 28, 28)))[:-1], "1567 data bytes for a 2x28x28 array"),
        (_images_bytes(np.zeros((2, 28, 28))) + b"\0", "trailing bytes"),
        (_images_bytes(np.zeros((2, 28, 28)), magic=0x0D03), "magic number 0x00000D03"),
        (b"\0\0\x08", "3 bytes, shorter than its 16-byte header"),
        (_images_bytes(np.zeros((2, 27, 27))), "images are 27x27, expected 28x28"),
    ],
)
def test_damaged_image_files_are_one_line_errors_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetUnavailableError) as info:
        read_idx_images(path, 28)
    message = str(info.value)
    assert isinstance(info.value, FedlabError)
    assert str(path) in message and fragment in message and "\n" not in message


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_labels_bytes(np.arange(200) % 10))[:-12])
    with pytest.raises(DatasetUnavailableError, match=r"t10k-labels-idx1-ubyte\.gz") as info:
        read_idx_labels(path)
    assert "\n" not in str(info.value)


def test_labels_file_with_image_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(_images_bytes(np.zeros((1, 28, 28))))
    with pytest.raises(DatasetUnavailableError, match="expected 0x00000801"):
        read_idx_labels(path)
