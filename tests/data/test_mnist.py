"""MNIST and EMNIST loaders on small IDX files written in the real format and layout."""

import dataclasses
import gzip
import hashlib
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

from fedlab_cli.data import mnist
from fedlab_cli.data.registry import DATASETS, load_dataset
from fedlab_cli.errors import DatasetUnavailableError

SIZES = {"train": 6, "test": 4}


def _idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 2051, *images.shape) + images.tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _release_files(release: mnist.IdxRelease, seed: int = 0) -> dict[str, tuple[bytes, np.ndarray]]:
    """IDX bytes and the array they hold, per file stem of ``release``."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, images_stem, labels_stem in (
        ("train", release.train_images, release.train_labels),
        ("test", release.test_images, release.test_labels),
    ):
        n = SIZES[split]
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, release.num_classes, size=n).astype(np.uint8)
        files[images_stem] = (_idx_images(images), images)
        files[labels_stem] = (_idx_labels(labels), labels)
    return files


def _write(root: Path, release: mnist.IdxRelease, gz: bool = False, seed: int = 0) -> dict:
    raw = root / release.folder / "raw"
    raw.mkdir(parents=True)
    files = _release_files(release, seed)
    for stem, (content, _) in files.items():
        if gz:
            (raw / f"{stem}.gz").write_bytes(gzip.compress(content))
        else:
            (raw / stem).write_bytes(content)
    return {stem: array for stem, (_, array) in files.items()}


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_decodes_pixels_and_labels_in_file_order(tmp_path: Path, gz: bool) -> None:
    arrays = _write(tmp_path, mnist.MNIST, gz=gz)
    ds = mnist.load_mnist(tmp_path, download=False)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.train_images.shape == (6, 1, 28, 28) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (4, 1, 28, 28)
    assert ds.train_labels.dtype == torch.int64 and ds.test_labels.dtype == torch.int64
    assert ds.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.test_images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))


def test_emnist_images_are_kept_as_stored_not_transposed(tmp_path: Path) -> None:
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    glyph = np.zeros((1, 28, 28), dtype=np.uint8)
    glyph[0, 2, 3:20] = 255  # a horizontal bar in stored row 2
    glyph[0, 5:9, 25] = 128  # a short vertical one in stored column 25
    names = mnist.EMNIST
    (raw / f"{names.train_images}.gz").write_bytes(gzip.compress(_idx_images(glyph)))
    (raw / names.train_labels).write_bytes(_idx_labels(np.array([46])))
    (raw / names.test_images).write_bytes(_idx_images(glyph))
    (raw / f"{names.test_labels}.gz").write_bytes(gzip.compress(_idx_labels(np.array([0]))))
    ds = mnist.load_emnist(tmp_path, download=False)
    image = ds.train_images[0, 0]
    assert ds.num_classes == 47 and ds.train_labels.tolist() == [46]
    assert image[2, 3:20].tolist() == [255] * 17 and int(image[:, 2].sum()) == 0
    assert image[5:9, 25].tolist() == [128] * 4
    assert torch.equal(ds.test_images[0, 0], image)


def test_mnist_layout_matches_torchvision(tmp_path: Path) -> None:
    """torchvision reads the very same files from the very same folder, with the same result."""
    _write(tmp_path, mnist.MNIST)
    ours = mnist.load_mnist(tmp_path, download=False)
    theirs = tv_datasets.MNIST(str(tmp_path), train=True, download=False)
    assert torch.equal(ours.train_images[:, 0], theirs.data)
    assert torch.equal(ours.train_labels, theirs.targets)


def test_emnist_layout_matches_torchvision(tmp_path: Path) -> None:
    _write(tmp_path, mnist.EMNIST)
    ours = mnist.load_emnist(tmp_path, download=False)
    theirs = tv_datasets.EMNIST(str(tmp_path), split="balanced", train=False, download=False)
    assert torch.equal(ours.test_images[:, 0], theirs.data)  # both as stored
    assert torch.equal(ours.test_labels, theirs.targets)


def test_sources_are_torchvisions() -> None:
    """URLs and md5s against the installed torchvision (SPARSE_FL.md asks for its sources)."""
    assert mnist.MNIST.source.mirrors[0] in tv_datasets.MNIST.mirrors
    assert dict(mnist.MNIST.source.md5s) == {
        name.removesuffix(".gz"): md5 for name, md5 in tv_datasets.MNIST.resources
    }
    assert mnist.EMNIST.source.urls[0] == tv_datasets.EMNIST.url
    assert mnist.EMNIST.source.md5 == tv_datasets.EMNIST.md5 == "58c8d27c78d21e728a6bc7b3cc06412e"


def test_missing_files_name_folder_files_download_switch_and_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        mnist.load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message and "data.download: true" in message
    assert "t10k-labels-idx1-ubyte[.gz]" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message


def test_one_missing_file_is_named_alone(tmp_path: Path) -> None:
    _write(tmp_path, mnist.EMNIST)
    (tmp_path / "EMNIST" / "raw" / mnist.EMNIST.test_labels).unlink()
    with pytest.raises(DatasetUnavailableError) as info:
        mnist.load_emnist(tmp_path, download=False)
    message = str(info.value)
    assert "(emnist-balanced-test-labels-idx1-ubyte[.gz])" in message
    assert "58c8d27c78d21e728a6bc7b3cc06412e" in message


def test_count_mismatch_and_label_range_are_errors(tmp_path: Path) -> None:
    _write(tmp_path, mnist.MNIST)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(np.array([1, 2, 3])))
    with pytest.raises(DatasetUnavailableError, match=r"holds 4 images but .* holds 3 labels"):
        mnist.load_mnist(tmp_path, download=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(np.array([1, 2, 10, 3])))
    with pytest.raises(DatasetUnavailableError, match=r"t10k-labels.*label 10 out of range 0..9"):
        mnist.load_mnist(tmp_path, download=False)


def test_damaged_file_in_a_release_names_it(tmp_path: Path) -> None:
    _write(tmp_path, mnist.MNIST, gz=True)
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.raises(DatasetUnavailableError) as info:
        mnist.load_mnist(tmp_path, download=False)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def _gz_mirror(tmp_path: Path, release: mnist.IdxRelease) -> tuple[mnist.IdxRelease, dict]:
    """A local mirror of ``release``'s .gz files and the release pointed at it."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = _release_files(release, seed=5)
    md5s = []
    for stem, (content, _) in files.items():
        packed = gzip.compress(content)
        (mirror / f"{stem}.gz").write_bytes(packed)
        md5s.append((stem, hashlib.md5(packed).hexdigest()))
    dead = (tmp_path / "dead").as_uri() + "/"
    source = mnist.GzFiles(mirrors=(dead, mirror.as_uri() + "/"), md5s=tuple(md5s))
    return dataclasses.replace(release, source=source), files


def test_gz_download_verifies_md5_and_is_then_decoded(tmp_path: Path) -> None:
    release, files = _gz_mirror(tmp_path, mnist.MNIST)
    root = tmp_path / "data"
    ds = mnist.load_idx_release(release, root, download=True)
    assert torch.equal(ds.test_images[:, 0], torch.from_numpy(files["t10k-images-idx3-ubyte"][1]))
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{s}.gz" for s in files)


def test_gz_download_with_wrong_md5_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    release, _ = _gz_mirror(tmp_path, mnist.MNIST)
    md5s = tuple((stem, "0" * 32) for stem, _ in release.source.md5s)
    release = dataclasses.replace(release, source=dataclasses.replace(release.source, md5s=md5s))
    root = tmp_path / "data"
    with pytest.raises(DatasetUnavailableError) as info:
        mnist.load_idx_release(release, root, download=True)
    message = str(info.value)
    assert "download failed (train-images-idx3-ubyte.gz: ChecksumError" in message
    assert "\n" not in message
    assert list((root / "MNIST" / "raw").iterdir()) == []


def _emnist_zip(tmp_path: Path, members: dict[str, bytes]) -> mnist.IdxRelease:
    archive = tmp_path / "mirror" / "gzip.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, content in members.items():
            bundle.writestr(name, content)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    source = dataclasses.replace(mnist.EMNIST.source, urls=(archive.as_uri(),), md5=md5)
    return dataclasses.replace(mnist.EMNIST, source=source)


def test_emnist_zip_download_extracts_the_balanced_files(tmp_path: Path) -> None:
    files = _release_files(mnist.EMNIST, seed=2)
    members = {f"gzip/{stem}.gz": gzip.compress(content) for stem, (content, _) in files.items()}
    members["gzip/emnist-letters-train-images-idx3-ubyte.gz"] = b"not needed"
    release = _emnist_zip(tmp_path, members)
    root = tmp_path / "data"
    ds = mnist.load_idx_release(release, root, download=True)
    expected = files["emnist-balanced-train-labels-idx1-ubyte"][1]
    assert ds.train_labels.tolist() == expected.tolist()
    raw = root / "EMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{s}.gz" for s in files)


def test_emnist_zip_without_a_member_is_a_one_line_error(tmp_path: Path) -> None:
    files = _release_files(mnist.EMNIST)
    members = {f"gzip/{stem}.gz": gzip.compress(content) for stem, (content, _) in files.items()}
    del members["gzip/emnist-balanced-test-images-idx3-ubyte.gz"]
    release = _emnist_zip(tmp_path, members)
    with pytest.raises(DatasetUnavailableError) as info:
        mnist.load_idx_release(release, tmp_path / "data", download=True)
    message = str(info.value)
    assert "download failed" in message and "gzip.zip" in message and "\n" not in message
    assert "emnist-balanced-test-images-idx3-ubyte" in message


@pytest.mark.parametrize("name", ["mnist", "emnist"])
def test_registry_entries_load_and_cache(tmp_path: Path, name: str) -> None:
    release = {"mnist": mnist.MNIST, "emnist": mnist.EMNIST}[name]
    _write(tmp_path, release, gz=True)
    info = DATASETS[name]
    assert (info.train_pool, info.test_pool) == {
        "mnist": (60000, 10000),
        "emnist": (112800, 18800),
    }[name]
    first = load_dataset(name, tmp_path, download=False)
    assert first.image_shape == info.image_shape == (1, 28, 28)
    assert first.num_classes == info.num_classes
    for path in (tmp_path / release.folder / "raw").iterdir():
        path.unlink()
    second = load_dataset(name, tmp_path, download=False)  # from the cache alone
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
