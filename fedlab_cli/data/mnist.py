"""MNIST and EMNIST-balanced from the official IDX files, in torchvision's folder layout.

Expected files under the data root, gzipped or not (torchvision's downloads leave them
unpacked; the official downloads are ``.gz``)::

    MNIST/raw/{train,t10k}-images-idx3-ubyte[.gz], MNIST/raw/{train,t10k}-labels-idx1-ubyte[.gz]
    EMNIST/raw/emnist-balanced-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]

Both decode to uint8 ``[N, 1, 28, 28]`` with int64 labels, in file order (the order
torchvision's datasets use, which the partitions index into). MNIST: 60 000 train and 10 000
test images, 10 classes. EMNIST balanced: 112 800 train and 18 800 test images, 47 classes.

Orientation. EMNIST's IDX images are stored transposed: read row-major, each character appears
mirrored about the main diagonal. torchvision's ``EMNIST`` returns them as stored, and FedPM
trains on that dataset without undoing it: its IID path feeds torchvision's samples straight
to the model, and its non-IID path calls ``.data.numpy().transpose((0, 1, 2))``, an identity
permutation (``src/fedssm/utils/get_split_dataset.py``, ``get_emnist``). So fedlab keeps the
images exactly as stored too — what FedPM effectively trains and tests on. (Train and test
share the orientation, so a model learns either equally well; the choice only matters for
parity and for looking at the images.) MNIST is stored upright.

Downloads (``data.download: true``) follow torchvision's sources: MNIST's four ``.gz`` files
from its mirrors, each checked against its md5; EMNIST's ``gzip.zip`` (md5-checked), from
which the four balanced ``.gz`` files are taken and the zip removed again.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedlab_cli.atomic import atomic_open
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.download import one_line
from fedlab_cli.data.idx import bad_file, read_idx_images, read_idx_labels
from fedlab_cli.data.verified_download import download_from_mirrors, file_md5
from fedlab_cli.errors import DatasetUnavailableError

ProgressFn = Callable[[str, int, int], None]

SIDE = 28


@dataclass(frozen=True)
class GzFiles:
    """Each IDX file downloaded on its own as ``<stem>.gz``, mirrors tried in order (MNIST)."""

    mirrors: tuple[str, ...]
    md5s: tuple[tuple[str, str], ...]  # (stem, md5 of the official <stem>.gz)

    def fetch(self, raw: Path, stems: Sequence[str]) -> str | None:
        """Download the ``.gz`` of every stem into ``raw``; the first failure as one line."""
        md5 = dict(self.md5s)
        for stem in stems:
            urls = [f"{mirror}{stem}.gz" for mirror in self.mirrors]
            failure = download_from_mirrors(urls, raw / f"{stem}.gz", md5[stem])
            if failure is not None:
                return f"{stem}.gz: {failure}"
        return None

    def describe(self, stems: Sequence[str]) -> str:
        md5 = dict(self.md5s)
        files = ", ".join(f"{stem}.gz md5 {md5[stem]}" for stem in stems)
        return f"from {self.mirrors[0]}: {files}"


@dataclass(frozen=True)
class ZippedGzFiles:
    """One zip holding every IDX file as ``<member_dir>/<stem>.gz`` (EMNIST's ``gzip.zip``)."""

    urls: tuple[str, ...]
    md5: str
    filename: str  # where the zip is saved inside raw/ (torchvision's name, so its copy is reused)
    member_dir: str

    def fetch(self, raw: Path, stems: Sequence[str]) -> str | None:
        """Get the zip (unless a verified copy is there) and take the stems' ``.gz`` out of it."""
        archive = raw / self.filename
        downloaded = False
        if not (archive.is_file() and file_md5(archive) == self.md5):
            failure = download_from_mirrors(self.urls, archive, self.md5)
            if failure is not None:
                return failure
            downloaded = True
        try:
            with zipfile.ZipFile(archive) as bundle:
                for stem in stems:
                    member = f"{self.member_dir}/{stem}.gz"
                    with bundle.open(member) as src, atomic_open(raw / f"{stem}.gz") as dst:
                        shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            return f"{archive}: {one_line(exc)}"
        if downloaded:  # only the balanced split is used: do not keep the other splits around
            archive.unlink()
        return None

    def describe(self, stems: Sequence[str]) -> str:
        return f"archive {self.urls[0]}, md5 {self.md5}"


@dataclass(frozen=True)
class IdxRelease:
    """Where one IDX dataset lives on disk (``<root>/<folder>/raw``) and on the web."""

    name: str
    folder: str
    train_images: str
    train_labels: str
    test_images: str
    test_labels: str
    num_classes: int
    source: GzFiles | ZippedGzFiles

    @property
    def stems(self) -> tuple[str, str, str, str]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


MNIST = IdxRelease(
    name="mnist",
    folder="MNIST",
    train_images="train-images-idx3-ubyte",
    train_labels="train-labels-idx1-ubyte",
    test_images="t10k-images-idx3-ubyte",
    test_labels="t10k-labels-idx1-ubyte",
    num_classes=10,
    source=GzFiles(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5s=(
            ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
)

EMNIST = IdxRelease(
    name="emnist",
    folder="EMNIST",
    train_images="emnist-balanced-train-images-idx3-ubyte",
    train_labels="emnist-balanced-train-labels-idx1-ubyte",
    test_images="emnist-balanced-test-images-idx3-ubyte",
    test_labels="emnist-balanced-test-labels-idx1-ubyte",
    num_classes=47,
    source=ZippedGzFiles(
        urls=(
            "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
            "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip",
        ),
        md5="58c8d27c78d21e728a6bc7b3cc06412e",
        filename="gzip.zip",
        member_dir="gzip",
    ),
)


def load_mnist(root: Path, download: bool, progress: ProgressFn | None = None) -> ImageDataset:
    """MNIST decoded to uint8 ``[N, 1, 28, 28]`` (60 000 train, 10 000 test)."""
    return load_idx_release(MNIST, root, download, progress)


def load_emnist(root: Path, download: bool, progress: ProgressFn | None = None) -> ImageDataset:
    """EMNIST balanced (47 classes), images as stored (see the module docstring)."""
    return load_idx_release(EMNIST, root, download, progress)


def load_idx_release(
    release: IdxRelease, root: Path, download: bool, progress: ProgressFn | None = None
) -> ImageDataset:
    """Decode one IDX release under ``root``, downloading it first if absent and allowed."""
    paths = ensure_idx_files(release, Path(root).expanduser(), download)
    decoded: list[np.ndarray] = []
    for done, stem in enumerate(release.stems):
        path = paths[stem]
        is_images = stem in (release.train_images, release.test_images)
        decoded.append(read_idx_images(path, SIDE) if is_images else read_idx_labels(path))
        if progress is not None:
            progress(f"decoding {release.name}", done + 1, len(release.stems))
    train_images, train_labels, test_images, test_labels = decoded
    for images_stem, labels_stem, images, labels in (
        (release.train_images, release.train_labels, train_images, train_labels),
        (release.test_images, release.test_labels, test_images, test_labels),
    ):
        _check_pair(paths[images_stem], paths[labels_stem], images, labels, release.num_classes)
    return ImageDataset(
        name=release.name,
        train_images=_as_tensor(train_images).unsqueeze(1),
        train_labels=_as_tensor(train_labels).long(),
        test_images=_as_tensor(test_images).unsqueeze(1),
        test_labels=_as_tensor(test_labels).long(),
        num_classes=release.num_classes,
    )


def ensure_idx_files(release: IdxRelease, root: Path, download: bool) -> dict[str, Path]:
    """The path of each of the release's files under ``root``, downloaded first if allowed."""
    raw = root / release.folder / "raw"
    missing = [stem for stem in release.stems if _locate(raw, stem) is None]
    failure = None
    if missing and download:
        raw.mkdir(parents=True, exist_ok=True)
        failure = release.source.fetch(raw, missing) or "the download lacked them"
        missing = [stem for stem in release.stems if _locate(raw, stem) is None]
    if missing:
        raise _unavailable(release, raw, missing, failure)
    return {stem: _locate(raw, stem) for stem in release.stems}  # type: ignore[misc]


def _locate(raw: Path, stem: str) -> Path | None:
    """The unpacked file if present, else its ``.gz``, else None."""
    for name in (stem, f"{stem}.gz"):
        if (raw / name).is_file():
            return raw / name
    return None


def _unavailable(
    release: IdxRelease, raw: Path, missing: list[str], failure: str | None
) -> DatasetUnavailableError:
    """One line: what is missing, where it goes, where to get it (and why the download failed)."""
    names = ", ".join(f"{stem}[.gz]" for stem in missing)
    put = f"put the IDX files (gzipped or not) in {raw}"
    how = (
        f"{put} or set data.download: true"
        if failure is None
        else (f"download failed ({failure}); {put}")
    )
    return DatasetUnavailableError(
        f"data: {release.name} files missing in {raw} ({names}); {how} "
        f"({release.source.describe(missing)})"
    )


def _check_pair(
    images_path: Path, labels_path: Path, images: np.ndarray, labels: np.ndarray, classes: int
) -> None:
    if len(images) != len(labels):
        raise DatasetUnavailableError(
            f"data: {images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; delete them to re-download"
        )
    if len(labels) and int(labels.max()) >= classes:
        raise bad_file(labels_path, f"label {int(labels.max())} out of range 0..{classes - 1}")


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A writable tensor copy (the decoded arrays view read-only file bytes)."""
    return torch.from_numpy(np.array(array, copy=True))
