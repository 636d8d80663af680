"""Tensor cache: round trip, atomic write, and rebuild of a bad cache through load_dataset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedlab_cli.data import cache, registry
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.errors import FedlabError


def _dataset(name: str = "fake", seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(
        name=name,
        train_images=torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, 4, (12,), generator=g),
        test_images=torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, 4, (5,), generator=g),
        num_classes=4,
    )


def _same(a: ImageDataset, b: ImageDataset) -> bool:
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    tensors_equal = all(torch.equal(getattr(a, k), getattr(b, k)) for k in keys)
    return tensors_equal and a.num_classes == b.num_classes and a.name == b.name


@pytest.fixture
def counting_loader(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Register a 'fake' dataset whose loader counts its calls."""
    calls: list[int] = []

    def loader(root: Path, download: bool, progress=None) -> ImageDataset:
        calls.append(1)
        return _dataset()

    info = replace(registry.DATASETS["cifar10"], name="fake", loader=loader)
    monkeypatch.setitem(registry.DATASETS, "fake", info)
    return calls


def test_round_trip_and_no_temp_files_left(tmp_path: Path) -> None:
    path = cache.cache_path(tmp_path, "fake")
    assert path == tmp_path / "fake" / "fedlab-cache-v1.pt"
    cache.write_cache(path, _dataset())
    assert _same(cache.read_cache(path, "fake"), _dataset())
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_absent_or_foreign_cache_reads_as_none(tmp_path: Path) -> None:
    path = cache.cache_path(tmp_path, "fake")
    assert cache.read_cache(path, "fake") is None
    cache.write_cache(path, _dataset())
    assert cache.read_cache(path, "other") is None  # a cache of another dataset is not trusted


def test_load_dataset_decodes_once_then_reads_cache(tmp_path: Path, counting_loader) -> None:
    first = registry.load_dataset("fake", tmp_path)
    second = registry.load_dataset("fake", tmp_path)
    assert counting_loader == [1]
    assert _same(first, second)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda path: path.write_bytes(b"\x00garbage"),
        lambda path: path.write_bytes(path.read_bytes()[:200]),  # truncated write
        lambda path: torch.save({"version": 1, "name": "fake", "num_classes": 4}, path),
        lambda path: torch.save(
            {**torch.load(path, weights_only=True), "train_labels": torch.zeros(3).long()}, path
        ),
    ],
    ids=["garbage", "truncated", "missing-tensors", "label-count-mismatch"],
)
def test_bad_cache_is_rebuilt(tmp_path: Path, counting_loader, corrupt) -> None:
    registry.load_dataset("fake", tmp_path)
    path = cache.cache_path(tmp_path, "fake")
    corrupt(path)
    rebuilt = registry.load_dataset("fake", tmp_path)
    assert counting_loader == [1, 1]
    assert _same(rebuilt, _dataset())
    assert _same(cache.read_cache(path, "fake"), _dataset())  # and the cache is good again


def test_cache_with_wrong_image_shape_is_rebuilt(tmp_path: Path, counting_loader) -> None:
    path = cache.cache_path(tmp_path, "fake")
    small = _dataset()
    small = replace(
        small,
        train_images=small.train_images[:, :, :8, :8],
        test_images=small.test_images[..., :8, :8],
    )
    cache.write_cache(path, small)
    assert registry.load_dataset("fake", tmp_path).image_shape == (3, 32, 32)
    assert counting_loader == [1]


def test_unwritable_cache_only_warns(tmp_path: Path, counting_loader) -> None:
    (tmp_path / "fake").write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match="could not write dataset cache"):
        ds = registry.load_dataset("fake", tmp_path)
    assert _same(ds, _dataset())


def test_unknown_dataset_message() -> None:
    with pytest.raises(FedlabError) as info:
        registry.load_dataset("xyz", "/nonexistent")
    assert str(info.value) == (
        "data.dataset: unknown dataset 'xyz' (known: cifar10, cifar100, digits, emnist, mnist, "
        "synthetic_cifar10, synthetic_cifar100, synthetic_tinyimagenet, tinyimagenet)"
    )


def test_registry_entries_are_consistent() -> None:
    expected = {
        "cifar10": (10, (3, 32, 32), 50000, 10000),
        "cifar100": (100, (3, 32, 32), 50000, 10000),
        "tinyimagenet": (200, (3, 64, 64), 100000, 10000),
        "digits": (10, (1, 8, 8), 1297, 500),
    }
    for name, (classes, shape, train, test) in expected.items():
        info = registry.DATASETS[name]
        assert info.name == name
        assert (info.num_classes, info.image_shape, info.train_pool, info.test_pool) == (
            classes,
            shape,
            train,
            test,
        )
        assert info.source and "\n" not in info.source
