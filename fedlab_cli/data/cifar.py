"""CIFAR-10 and CIFAR-100 from the official python-pickle release.

Sample order is file order (data_batch_1..5, then test_batch; CIFAR-100 ``train`` then ``test``),
which is the order torchvision's CIFAR classes use and therefore the order the reference
partition indexes into (REFERENCE.md decision 11).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fedlab_cli.data.base import ImageDataset, RawSource
from fedlab_cli.data.download import Archive, ensure_files, one_line
from fedlab_cli.errors import DatasetUnavailableError

ProgressFn = Callable[[str, int, int], None]

_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE


@dataclass(frozen=True)
class CifarRelease:
    """Where one CIFAR variant lives on disk and on the web."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    md5: str
    train_images_per_file: int
    test_images_per_file: int

    @property
    def archive(self) -> Archive:
        return Archive(self.name, self.url, self.md5, self.folder)

    def images_in(self, file_name: str) -> int:
        """How many images the official release has in batch file ``file_name``."""
        if file_name in self.train_files:
            return self.train_images_per_file
        return self.test_images_per_file

    @property
    def raw_source(self) -> RawSource:
        files = [*self.train_files, *self.test_files]
        return RawSource(
            folder=self.folder,
            files=lambda folder: [folder / name for name in files],
            train=self.train_images_per_file * len(self.train_files),
            test=self.test_images_per_file * len(self.test_files),
        )


CIFAR10 = CifarRelease(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    label_key="labels",
    num_classes=10,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_images_per_file=10000,
    test_images_per_file=10000,
)

CIFAR100 = CifarRelease(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    label_key="fine_labels",
    num_classes=100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_images_per_file=50000,
    test_images_per_file=10000,
)


def load_cifar10(root: Path, download: bool, progress: ProgressFn | None = None) -> ImageDataset:
    """CIFAR-10 decoded to uint8 ``[N, 3, 32, 32]`` (50 000 train, 10 000 test)."""
    return load_cifar(CIFAR10, root, download, progress)


def load_cifar100(root: Path, download: bool, progress: ProgressFn | None = None) -> ImageDataset:
    """CIFAR-100 with its 100 fine labels, decoded to uint8 ``[N, 3, 32, 32]``."""
    return load_cifar(CIFAR100, root, download, progress)


def load_cifar(
    release: CifarRelease, root: Path, download: bool, progress: ProgressFn | None = None
) -> ImageDataset:
    """Decode one CIFAR release under ``root``, downloading it first if absent and allowed."""
    root = Path(root).expanduser()
    folder = ensure_files(release.archive, root, download, partial(_missing, release))
    files = [*release.train_files, *release.test_files]
    decoded = []
    for done, file_name in enumerate(files):
        decoded.append(_read_batch(folder / file_name, release))
        if progress is not None:
            progress(f"decoding {release.name}", done + 1, len(files))
    n_train = len(release.train_files)
    train_images, train_labels = _concat(decoded[:n_train])
    test_images, test_labels = _concat(decoded[n_train:])
    return ImageDataset(
        name=release.name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=release.num_classes,
    )


def _missing(release: CifarRelease, folder: Path) -> list[str]:
    """The batch files of ``release`` that are not in ``folder``."""
    files = [*release.train_files, *release.test_files]
    return [name for name in files if not (folder / name).is_file()]


def _read_batch(path: Path, release: CifarRelease) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as ``(uint8 [n, 3, 32, 32], int64 [n])``, validated."""
    try:
        with path.open("rb") as handle:
            raw = pickle.load(handle, encoding="bytes")
    except Exception as exc:
        raise DatasetUnavailableError(
            f"data: {release.name} file {path} is not a readable CIFAR batch ({one_line(exc)}); "
            f"delete it to re-download"
        ) from None
    if not isinstance(raw, dict):
        raise _bad(path, release, "expected a pickled dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    if "data" not in entry or release.label_key not in entry:
        raise _bad(path, release, f"expected keys 'data' and '{release.label_key}'")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[release.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise _bad(path, release, f"data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise _bad(path, release, f"{len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= release.num_classes):
        raise _bad(path, release, f"label out of range 0..{release.num_classes - 1}")
    expected = release.images_in(path.name)
    if len(data) != expected:  # a cut or foreign batch would silently shrink the pool
        raise _bad(path, release, f"{len(data)} images, the release has {expected}")
    return data.reshape(-1, 3, _SIDE, _SIDE), labels.astype(np.int64)


def _bad(path: Path, release: CifarRelease, detail: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"data: {release.name} file {path} has an unexpected format: {detail}; "
        f"delete it to re-download"
    )


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
