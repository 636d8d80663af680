"""Tiny-ImageNet-200 from the official release folder, in torchvision ImageFolder order.

Expected layout under the data root (the release zip extracts to exactly this)::

    tiny-imagenet-200/wnids.txt
    tiny-imagenet-200/train/<wnid>/images/*.JPEG
    tiny-imagenet-200/val/images/*.JPEG + val/val_annotations.txt   (the test pool)

Classes are the wnids sorted as strings and a label is the position in that list. Both pools are
ordered as ImageFolder would order them — class by class in wnid order, files sorted by name
within a class — with val images assigned to classes by ``val_annotations.txt``, which is what the
reference sees after its prepare script groups ``val/`` into class folders (REFERENCE.md
decision 11). The order is computed; no file is moved. ``test/`` is unlabeled and ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fedlab_cli.data.base import ImageDataset, RawSource
from fedlab_cli.data.download import Archive, ensure_files, one_line
from fedlab_cli.errors import DatasetUnavailableError

ProgressFn = Callable[[str, int, int], None]

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4553bb13b8d"
SIDE = 64
ARCHIVE = Archive("tinyimagenet", URL, MD5, FOLDER)

_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_CHUNK = 256  # images decoded between two progress reports


def load_tiny_imagenet(
    root: Path, download: bool, progress: ProgressFn | None = None
) -> ImageDataset:
    """Decode the release under ``root/tiny-imagenet-200`` to uint8 ``[N, 3, 64, 64]``."""
    folder = ensure_files(ARCHIVE, Path(root).expanduser(), download, _missing)

    wnids = read_wnids(folder)
    train_files, train_labels = train_listing(folder, wnids)
    test_files, test_labels = val_listing(folder, wnids)
    images = _decode_all([*train_files, *test_files], progress)
    n_train = len(train_files)
    return ImageDataset(
        name="tinyimagenet",
        train_images=images[:n_train],
        train_labels=torch.tensor(train_labels, dtype=torch.int64),
        test_images=images[n_train:],
        test_labels=torch.tensor(test_labels, dtype=torch.int64),
        num_classes=len(wnids),
    )


def read_wnids(folder: Path) -> list[str]:
    """The class ids, sorted as strings (= ImageFolder's class order)."""
    wnids = sorted({line.strip() for line in _read_lines(folder / "wnids.txt") if line.strip()})
    if not wnids:
        raise _bad(folder / "wnids.txt", "no class ids")
    return wnids


def train_listing(folder: Path, wnids: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Train files in ImageFolder order (classes in wnid order, names sorted) with labels."""
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        class_dir = folder / "train" / wnid / "images"
        if not class_dir.is_dir():
            raise _bad(class_dir, f"class folder missing for wnid {wnid} listed in wnids.txt")
        names = sorted(p.name for p in class_dir.iterdir() if _is_image(p))
        files.extend(class_dir / name for name in names)
        labels.extend([label] * len(names))
    return files, labels


def val_listing(folder: Path, wnids: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Val files grouped by their annotated class in wnid order, names sorted within a class."""
    annotations = folder / "val" / "val_annotations.txt"
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    by_class: list[list[str]] = [[] for _ in wnids]
    for number, line in enumerate(_read_lines(annotations), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in label_of:
            raise _bad(annotations, f"line {number} has no known wnid in its second column")
        by_class[label_of[fields[1].strip()]].append(fields[0].strip())
    images_dir = folder / "val" / "images"
    files: list[Path] = []
    labels: list[int] = []
    for label, names in enumerate(by_class):
        files.extend(images_dir / name for name in sorted(names))
        labels.extend([label] * len(names))
    absent = [p.name for p in files if not p.is_file()]
    if absent:
        raise _bad(annotations, f"{len(absent)} annotated images absent, e.g. {absent[0]}")
    return files, labels


def _decode_all(files: Sequence[Path], progress: ProgressFn | None) -> torch.Tensor:
    """Decode every file to one uint8 ``[N, 3, 64, 64]`` tensor, in order.

    Threads help because Pillow releases the GIL while it decodes; chunking bounds the memory
    held by finished-but-unconsumed results and gives the progress cadence.
    """
    out = np.empty((len(files), 3, SIDE, SIDE), dtype=np.uint8)  # CHW up front: no second copy
    total = len(files)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, total, _CHUNK):
            chunk = files[start : start + _CHUNK]
            for offset, array in enumerate(pool.map(_decode_one, chunk)):
                out[start + offset] = array.transpose(2, 0, 1)
            if progress is not None:
                progress("decoding tinyimagenet", start + len(chunk), total)
    return torch.from_numpy(out)


def _decode_one(path: Path) -> np.ndarray:
    """One image as uint8 HWC RGB; greyscale (mode L) and CMYK files become 3-channel RGB."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as exc:  # truncated or non-image file: name it, one line
        raise _bad(path, f"cannot decode image ({one_line(exc)})") from None
    if array.shape != (SIDE, SIDE, 3):
        raise _bad(path, f"image is {array.shape[1]}x{array.shape[0]}, expected {SIDE}x{SIDE}")
    return array


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file()


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, one_line(exc)) from None


def source_files(folder: Path) -> list[Path]:
    """Every file the decoder reads: the class list, the val annotations and all images of
    ``train/`` and ``val/images`` (``test/`` is unlabeled and never read)."""
    files = [folder / "wnids.txt", folder / "val" / "val_annotations.txt"]
    for top in (folder / "train", folder / "val" / "images"):
        for directory, _, names in os.walk(top):
            files.extend(Path(directory) / name for name in names)
    return sorted(files)


RAW_SOURCE = RawSource(folder=FOLDER, files=source_files, train=None, test=None)
"""Pool sizes follow from the listing (the 10-class sample release is smaller than the full)."""


def _missing(folder: Path) -> list[str]:
    """Release entries absent from ``folder`` (relative names, for the error message)."""
    needed = ("wnids.txt", "train", "val/images", "val/val_annotations.txt")
    return [name for name in needed if not (folder / name).exists()]


def _bad(path: Path, detail: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(f"data: tinyimagenet file {path}: {detail}")
