"""The IDX format that MNIST and EMNIST ship in, read and checked.

An IDX file is a 4-byte magic number — two zero bytes, a type code (0x08 = unsigned byte) and the
number of dimensions — then one big-endian uint32 per dimension, then the data in row-major
order. Image files are ``0x00000803`` (count x rows x columns), label files ``0x00000801``
(count). Either may be gzipped (``.gz``), as the official downloads are.

Anything that does not match — wrong magic, wrong image size, more or fewer data bytes than
the header announces, a gzip stream cut short — is a one-line error naming the file, never a
silently short or misshapen pool.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fedlab_cli.data.download import one_line
from fedlab_cli.errors import DatasetUnavailableError

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_idx_images(path: Path, side: int) -> np.ndarray:
    """uint8 ``[N, side, side]`` from an IDX image file (rows then columns, as stored)."""
    dims, data = _read_ubyte_idx(path, ndim=3)
    if dims[1:] != (side, side):
        raise bad_file(path, f"images are {dims[1]}x{dims[2]}, expected {side}x{side}")
    return data.reshape(dims)


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 ``[N]`` from an IDX label file."""
    _, data = _read_ubyte_idx(path, ndim=1)
    return data


def bad_file(path: Path, detail: str) -> DatasetUnavailableError:
    """The one-line error for a damaged or foreign IDX file."""
    return DatasetUnavailableError(
        f"data: {path} is not a valid IDX file: {detail}; delete it to re-download"
    )


def _read_ubyte_idx(path: Path, ndim: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Header dimensions and the flat uint8 payload, both checked against each other."""
    raw = _read_bytes(path)
    magic = (UBYTE << 8) | ndim
    header = 4 + 4 * ndim
    if len(raw) >= 4 and (found := int.from_bytes(raw[:4], "big")) != magic:
        raise bad_file(path, f"magic number 0x{found:08X}, expected 0x{magic:08X}")
    if len(raw) < header:
        raise bad_file(path, f"{len(raw)} bytes, shorter than its {header}-byte header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header
    if payload != expected:
        shape = "x".join(str(d) for d in dims)
        cause = "truncated" if payload < expected else "trailing bytes"
        raise bad_file(path, f"{payload} data bytes for a {shape} array ({cause})")
    return dims, np.frombuffer(raw, dtype=np.uint8, offset=header)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise bad_file(path, one_line(exc)) from None
