"""Tiny-ImageNet loader on a real 10-class slice of the official release."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import utils as tv_utils

from fedlab_cli.data import cache, tiny_imagenet
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.registry import load_dataset
from fedlab_cli.errors import DatasetUnavailableError

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "tiny-imagenet-200-sample"

needs_sample = pytest.mark.skipif(
    not (SAMPLE / "wnids.txt").is_file(), reason=f"Tiny-ImageNet sample not found at {SAMPLE}"
)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny-imagenet-200").symlink_to(SAMPLE, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def decoded(sample_root: Path) -> ImageDataset:
    return tiny_imagenet.load_tiny_imagenet(sample_root, download=False)


def _sorted_wnids() -> list[str]:
    return sorted(line.strip() for line in (SAMPLE / "wnids.txt").read_text().splitlines())


def _expected_train_files() -> list[Path]:
    """ImageFolder order, computed independently: sorted classes, names sorted as strings."""
    return [
        path
        for wnid in _sorted_wnids()
        for path in sorted(
            (SAMPLE / "train" / wnid / "images").glob("*.JPEG"), key=lambda p: p.name
        )
    ]


def _expected_val() -> tuple[list[Path], list[int]]:
    wnids = _sorted_wnids()
    pairs = []
    for line in (SAMPLE / "val" / "val_annotations.txt").read_text().splitlines():
        file_name, wnid = line.split("\t")[:2]
        pairs.append((wnids.index(wnid), file_name))
    pairs.sort()
    return [SAMPLE / "val" / "images" / name for _, name in pairs], [label for label, _ in pairs]


def _pil_chw(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


@needs_sample
def test_shapes_dtypes_and_classes(decoded: ImageDataset) -> None:
    assert decoded.name == "tinyimagenet" and decoded.num_classes == 10
    assert decoded.train_images.shape == (200, 3, 64, 64)
    assert decoded.test_images.shape == (100, 3, 64, 64)
    assert decoded.train_images.dtype == torch.uint8 and decoded.test_images.dtype == torch.uint8
    assert decoded.train_labels.tolist() == [c for c in range(10) for _ in range(20)]


@needs_sample
def test_train_order_is_imagefolder_order(decoded: ImageDataset) -> None:
    files = _expected_train_files()
    assert len(files) == 200
    wnid = _sorted_wnids()[3]
    position = next(i for i, p in enumerate(files) if p.name == f"{wnid}_10.JPEG")
    assert position == 3 * 20 + 2  # _0, _1, _10, ...
    for index in (0, 19, position, 117, 199):
        assert torch.equal(decoded.train_images[index], _pil_chw(files[index]))


@needs_sample
def test_val_labels_and_order_follow_annotations(decoded: ImageDataset) -> None:
    files, labels = _expected_val()
    assert decoded.test_labels.tolist() == labels
    for index in (0, 9, 10, 55, 99):
        assert torch.equal(decoded.test_images[index], _pil_chw(files[index]))


@needs_sample
def test_greyscale_images_become_three_equal_channels(decoded: ImageDataset) -> None:
    train_files = _expected_train_files()
    val_files, _ = _expected_val()
    found = 0
    for files, images in ((train_files, decoded.train_images), (val_files, decoded.test_images)):
        for index, path in enumerate(files):
            with Image.open(path) as image:
                if image.mode != "L":
                    continue
                grey = torch.from_numpy(np.array(image))
            found += 1
            for channel in range(3):
                assert torch.equal(images[index, channel], grey)
    assert found == 5


@needs_sample
def test_progress_reaches_total(sample_root: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    tiny_imagenet.load_tiny_imagenet(sample_root, False, lambda *a: calls.append(a))
    assert calls[-1][1:] == (300, 300)
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)


@needs_sample
def test_load_dataset_caches_under_root(sample_root: Path, decoded: ImageDataset) -> None:
    ds = load_dataset("tinyimagenet", sample_root, download=False)
    assert (sample_root / "tinyimagenet" / "fedlab-cache-v1.pt").is_file()
    assert torch.equal(ds.train_images, decoded.train_images)
    again = load_dataset("tinyimagenet", sample_root, download=False)
    assert torch.equal(again.test_labels, decoded.test_labels) and again.num_classes == 10


def _solid_jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (value, 255 - value, value // 2)).save(path, quality=95)


def test_string_sort_and_val_grouping_on_a_synthetic_release(tmp_path: Path) -> None:
    """The sample has no _2.._9 files, so build a release where string sort differs from
    natural sort and from creation order, with wnids.txt and val annotations unsorted."""
    folder = tmp_path / "tiny-imagenet-200"
    folder.mkdir()
    (folder / "wnids.txt").write_text("n02\nn01\n")
    for value, name in enumerate(["n01_2.JPEG", "n01_10.JPEG", "n01_1.JPEG"]):
        _solid_jpeg(folder / "train" / "n01" / "images" / name, 10 + 40 * value)
    _solid_jpeg(folder / "train" / "n02" / "images" / "n02_0.JPEG", 200)
    (folder / "train" / "n02" / "n02_boxes.txt").write_text("ignored\n")
    annotations = [("val_9.JPEG", "n02"), ("val_3.JPEG", "n01"), ("val_10.JPEG", "n02")]
    for value, (name, _) in enumerate(annotations):
        _solid_jpeg(folder / "val" / "images" / name, 30 + 50 * value)
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in annotations)
    )

    ds = tiny_imagenet.load_tiny_imagenet(tmp_path, download=False)
    train_order = ["n01_1", "n01_10", "n01_2", "n02_0"]
    expected = [folder / "train" / n.split("_")[0] / "images" / f"{n}.JPEG" for n in train_order]
    assert torch.equal(ds.train_images, torch.stack([_pil_chw(p) for p in expected]))
    assert ds.train_labels.tolist() == [0, 0, 0, 1] and ds.num_classes == 2
    val_order = ["val_3.JPEG", "val_10.JPEG", "val_9.JPEG"]  # n01 first, then n02 by name
    expected = [folder / "val" / "images" / name for name in val_order]
    assert torch.equal(ds.test_images, torch.stack([_pil_chw(p) for p in expected]))
    assert ds.test_labels.tolist() == [0, 1, 1]


def _two_class_release(root: Path) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir()
    (folder / "wnids.txt").write_text("n01\nn02\n")
    _solid_jpeg(folder / "train" / "n01" / "images" / "a.JPEG", 10)
    _solid_jpeg(folder / "train" / "n02" / "images" / "b.JPEG", 20)
    _solid_jpeg(folder / "val" / "images" / "v.JPEG", 30)
    _solid_jpeg(folder / "test" / "images" / "t.JPEG", 40)
    (folder / "val" / "val_annotations.txt").write_text("v.JPEG\tn02\t0\t0\t63\t63\n")
    return folder


def test_the_cache_fingerprint_covers_what_the_decoder_reads(tmp_path: Path) -> None:
    folder = _two_class_release(tmp_path)
    names = [p.relative_to(folder).as_posix() for p in tiny_imagenet.source_files(folder)]
    assert names == ["train/n01/images/a.JPEG", "train/n02/images/b.JPEG",
                     "val/images/v.JPEG", "val/val_annotations.txt", "wnids.txt"]  # fmt: skip


def test_a_changed_image_makes_the_tiny_cache_stale(tmp_path: Path) -> None:
    folder = _two_class_release(tmp_path)
    first = load_dataset("tinyimagenet", tmp_path, download=False)
    _solid_jpeg(folder / "train" / "n02" / "images" / "b.JPEG", 250)
    stamp = (folder / "wnids.txt").stat().st_mtime_ns + 10**9
    os.utime(folder / "train" / "n02" / "images" / "b.JPEG", ns=(stamp, stamp))
    with pytest.warns(cache.DatasetCacheNotice, match="b.JPEG"):
        second = load_dataset("tinyimagenet", tmp_path, download=False)
    red = [float(ds.train_images[1, 0].float().mean()) for ds in (first, second)]
    assert red == pytest.approx([20, 250], abs=3)  # the red channel of image b, before/after


def test_missing_folder_without_download_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        tiny_imagenet.load_tiny_imagenet(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert tiny_imagenet.URL in message and tiny_imagenet.MD5 in message


def test_download_failure_is_one_line(tmp_path: Path, monkeypatch) -> None:
    def offline(url: str, download_root: str, **kwargs: object) -> None:
        assert url == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
        assert kwargs.get("md5") == "90528d7ca1a48142e341f4553bb13b8d"
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("tinyimagenet", tmp_path, download=True)
    message = str(info.value)
    assert "\n" not in message and "download failed" in message and "URLError" in message
    assert not (tmp_path / "tinyimagenet" / "fedlab-cache-v1.pt").exists()


def test_annotation_with_unknown_wnid_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-imagenet-200"
    (folder / "train" / "n001" / "images").mkdir(parents=True)
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("n001\n")
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetUnavailableError, match=r"val_annotations\.txt"):
        tiny_imagenet.load_tiny_imagenet(tmp_path, download=False)
