"""CIFAR loaders on small files written in the real python-pickle release format."""

from __future__ import annotations

import os
import pickle
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import utils as tv_utils

from fedlab_cli.data import cache, cifar
from fedlab_cli.data.registry import load_dataset
from fedlab_cli.errors import DatasetUnavailableError

TRAIN_SIZES = (7, 7, 7, 7, 7)
TEST_SIZE = 6


@pytest.fixture(autouse=True)
def small_releases(monkeypatch):
    """Releases with the small batches these tests write (the real ones hold 10 000 images)."""
    monkeypatch.setattr(
        cifar, "CIFAR10", replace(cifar.CIFAR10, train_images_per_file=7, test_images_per_file=6)
    )
    monkeypatch.setattr(
        cifar, "CIFAR100", replace(cifar.CIFAR100, train_images_per_file=9, test_images_per_file=4)
    )


def _write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes) -> None:
    """A batch exactly as the release stores it: a pickled dict with bytes keys."""
    entry = {b"batch_label": b"synthetic", label_key: labels, b"data": data, b"filenames": []}
    with path.open("wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def _make_cifar10(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    return _make_cifar10_in(folder, seed)


def _make_cifar10_in(folder: Path, seed: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, size in zip(names, (*TRAIN_SIZES, TEST_SIZE), strict=True):
        data = rng.integers(0, 256, size=(size, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=size)]
        _write_batch(folder / name, data, labels, b"labels")
        batches[name] = (data, labels)
    return batches


def _make_cifar100(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {}
    for name, size in (("train", 9), ("test", 4)):
        data = rng.integers(0, 256, size=(size, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 100, size=size)]
        entry = {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * size}
        with (folder / name).open("wb") as handle:
            pickle.dump(entry, handle)
        batches[name] = (data, labels)
    return batches


def test_cifar10_decodes_pixels_labels_and_file_order(tmp_path: Path) -> None:
    batches = _make_cifar10(tmp_path)
    ds = cifar.load_cifar10(tmp_path, download=False)

    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.train_images.shape == (35, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (6, 3, 32, 32) and ds.test_images.dtype == torch.uint8
    assert ds.train_labels.dtype == torch.int64 and ds.test_labels.dtype == torch.int64

    train_data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    assert ds.train_labels.tolist() == train_labels
    assert ds.test_labels.tolist() == batches["test_batch"][1]
    for n, c, y, x in [(0, 0, 0, 0), (8, 1, 5, 31), (34, 2, 31, 7), (20, 0, 17, 3)]:
        assert int(ds.train_images[n, c, y, x]) == int(train_data[n, c * 1024 + y * 32 + x])
    # Whole-array check too: sample 12 is image 5 of data_batch_2 (file order across batches).
    expected = torch.from_numpy(batches["data_batch_2"][0][5].reshape(3, 32, 32))
    assert torch.equal(ds.train_images[12], expected)
    test_data = torch.from_numpy(batches["test_batch"][0].reshape(-1, 3, 32, 32))
    assert torch.equal(ds.test_images, test_data)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    batches = _make_cifar100(tmp_path)
    ds = cifar.load_cifar100(tmp_path, download=False)
    assert ds.num_classes == 100
    assert ds.train_labels.tolist() == batches["train"][1]
    assert ds.test_labels.tolist() == batches["test"][1]
    assert torch.equal(
        ds.train_images, torch.from_numpy(batches["train"][0].reshape(-1, 3, 32, 32))
    )
    assert ds.test_images.shape == (4, 3, 32, 32)


def test_missing_files_without_download_name_directory_and_url(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar10(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message
    assert cifar.CIFAR10.url in message


def test_download_failure_is_one_line_error(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def offline(url: str, download_root: str, **kwargs: object) -> None:
        calls.append((url, download_root, kwargs.get("md5")))
        raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar100(tmp_path, download=True)
    message = str(info.value)
    assert calls == [(cifar.CIFAR100.url, str(tmp_path), "eb9058c3a382ffc7106e4002c42a8d85")]
    assert "\n" not in message
    assert "download failed" in message and "URLError" in message
    assert str(tmp_path / "cifar-100-python") in message and cifar.CIFAR100.url in message


def test_successful_download_is_then_decoded(tmp_path: Path, monkeypatch) -> None:
    def fake_download(url: str, download_root: str, **kwargs: object) -> None:
        _make_cifar10(Path(download_root), seed=3)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    ds = cifar.load_cifar10(tmp_path, download=True)
    assert ds.train_images.shape == (35, 3, 32, 32)


@pytest.mark.parametrize(
    ("data", "labels", "fragment"),
    [
        (np.zeros((3, 3000), dtype=np.uint8), [0, 1, 2], "(N, 3072)"),
        (np.zeros((3, 3072), dtype=np.float32), [0, 1, 2], "(N, 3072)"),
        (np.zeros((3, 3072), dtype=np.uint8), [0, 1], "2 labels for 3 images"),
        (np.zeros((3, 3072), dtype=np.uint8), [0, 10, 2], "label out of range"),
    ],
)
def test_malformed_batch_names_the_file(
    tmp_path: Path, data: np.ndarray, labels: list[int], fragment: str
) -> None:
    _make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _write_batch(bad, data, labels, b"labels")
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar10(tmp_path, download=False)
    message = str(info.value)
    assert str(bad) in message and fragment in message and "\n" not in message


def test_unreadable_batch_names_the_file(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DatasetUnavailableError, match="test_batch"):
        cifar.load_cifar10(tmp_path, download=False)


def test_load_dataset_writes_cache_and_reuses_it_without_sources(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    progress: list[tuple[str, int, int]] = []
    first = load_dataset(
        "cifar10", tmp_path, download=False, progress=lambda *a: progress.append(a)
    )
    assert (tmp_path / "cifar10" / "fedlab-cache-v1.pt").is_file()
    assert progress[-1][1:] == (6, 6)

    for path in (tmp_path / "cifar-10-batches-py").iterdir():
        path.unlink()
    second = load_dataset("cifar10", tmp_path, download=False)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, key), getattr(second, key))
    assert second.num_classes == 10 and second.name == "cifar10"


def test_the_real_releases_hold_ten_thousand_images_a_batch():
    real10 = cifar.CIFAR10.__class__.__dataclass_fields__  # the fixture replaced the objects
    assert "train_images_per_file" in real10
    import importlib

    fresh = importlib.reload(cifar)
    try:
        assert fresh.CIFAR10.raw_source.train == 50000 and fresh.CIFAR10.raw_source.test == 10000
        assert fresh.CIFAR100.raw_source.train == 50000 and fresh.CIFAR100.raw_source.test == 10000
    finally:
        importlib.reload(cifar)


def test_a_batch_with_the_wrong_image_count_is_refused_naming_the_file(tmp_path):
    _make_cifar10(tmp_path)
    short = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    _write_batch(short, np.zeros((5, 3072), dtype=np.uint8), [0] * 5, b"labels")
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar10(tmp_path, download=False)
    assert str(info.value) == (
        f"data: cifar10 file {short} has an unexpected format: 5 images, the release has 7; "
        "delete it to re-download"
    )


def test_replaced_raw_files_make_the_cache_stale(tmp_path):
    batches = _make_cifar10(tmp_path)
    first = load_dataset("cifar10", tmp_path, download=False)
    replaced = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    data, labels = batches["data_batch_1"]
    _write_batch(replaced, data[::-1].copy(), labels, b"labels")  # same size, other pixels
    stamp = (
        os.stat(replaced).st_mtime_ns + 10**9
    )  # a replacement within the same clock tick still counts
    os.utime(replaced, ns=(stamp, stamp))
    with pytest.warns(cache.DatasetCacheNotice) as notices:
        second = load_dataset("cifar10", tmp_path, download=False)
    assert str(notices[0].message) == (
        f"dataset cache {tmp_path / 'cifar10' / 'fedlab-cache-v1.pt'} was made from an older "
        "cifar-10-batches-py/data_batch_1 (it was modified since); rebuilding it"
    )
    expected = torch.from_numpy(data[::-1].reshape(-1, 3, 32, 32).copy())
    assert torch.equal(second.train_images[:7], expected)
    assert not torch.equal(first.train_images[:7], expected)
    assert torch.equal(load_dataset("cifar10", tmp_path, download=False).train_images,
                       second.train_images)  # fmt: skip  # and the new cache is trusted


def test_a_raw_file_of_another_size_is_named(tmp_path):
    _make_cifar10(tmp_path)
    load_dataset("cifar10", tmp_path, download=False)
    grown = tmp_path / "cifar-10-batches-py" / "test_batch"
    before = grown.stat().st_size
    with grown.open("ab") as handle:
        handle.write(b"\0")
    with pytest.warns(cache.DatasetCacheNotice, match=(
        rf"made from a {before}-byte cifar-10-batches-py/test_batch, which is {before + 1} bytes"
    )):  # fmt: skip
        load_dataset("cifar10", tmp_path, download=False)


def test_a_short_cache_is_rebuilt_and_refused_when_the_raw_files_are_gone(tmp_path, monkeypatch):
    _make_cifar10(tmp_path)
    load_dataset("cifar10", tmp_path, download=False)
    bigger = replace(cifar.CIFAR10, train_images_per_file=8)  # the release says 40 now
    monkeypatch.setattr(cifar, "CIFAR10", bigger)
    for path in (tmp_path / "cifar-10-batches-py").iterdir():
        path.unlink()
    notice = pytest.warns(
        cache.DatasetCacheNotice, match="holds 35 train images, the release has 40"
    )
    with notice, pytest.raises(DatasetUnavailableError, match="cifar10 files missing"):
        load_dataset("cifar10", tmp_path, download=False)


def test_an_old_cache_without_a_fingerprint_is_rebuilt_once(tmp_path):
    _make_cifar10(tmp_path)
    load_dataset("cifar10", tmp_path, download=False)
    path = tmp_path / "cifar10" / "fedlab-cache-v1.pt"
    payload = torch.load(path, weights_only=True)
    del payload["source"]
    torch.save(payload, path)
    with pytest.warns(cache.DatasetCacheNotice, match="does not record its raw files"):
        load_dataset("cifar10", tmp_path, download=False)
    assert "source" in torch.load(path, weights_only=True)


def test_a_failed_download_removes_what_it_created(tmp_path, monkeypatch):
    root = tmp_path / "data"

    def half_then_fail(url: str, download_root: str, **kwargs: object) -> None:
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
        (Path(download_root) / "cifar-10-batches-py").mkdir()
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", half_then_fail)
    with pytest.raises(DatasetUnavailableError, match="download failed"):
        cifar.load_cifar10(root, download=True)
    assert not root.exists()

    root.mkdir()
    (root / "mine.txt").write_text("keep")
    with pytest.raises(DatasetUnavailableError):
        cifar.load_cifar10(root, download=True)
    assert [p.name for p in root.iterdir()] == ["mine.txt"]  # only what the download made goes
