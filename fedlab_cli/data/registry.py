"""The datasets fedlab knows, and the one entry point that loads them (cache first).

Every loader has the signature ``loader(root, download, progress=None) -> ImageDataset`` and only
decodes; the tensor cache is handled here, once for all datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from fedlab_cli.data import cache, digits, synthetic
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.cifar import CIFAR10, CIFAR100, load_cifar10, load_cifar100
from fedlab_cli.data.mnist import EMNIST, load_emnist, load_mnist
from fedlab_cli.data.tiny_imagenet import MD5 as TINY_MD5
from fedlab_cli.data.tiny_imagenet import URL as TINY_URL
from fedlab_cli.data.tiny_imagenet import load_tiny_imagenet
from fedlab_cli.errors import FedlabError

ProgressFn = Callable[[str, int, int], None]
"""``progress(description, done, total)``: called while a long decode runs."""


class DatasetLoader(Protocol):
    """Decode a dataset found (or downloaded) under ``root``; no caching."""

    def __call__(
        self, root: Path, download: bool, progress: ProgressFn | None = None
    ) -> ImageDataset: ...


@dataclass(frozen=True)
class DatasetInfo:
    """What ``fedlab list datasets`` shows, plus how to load the dataset."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    train_pool: int
    test_pool: int
    source: str
    loader: DatasetLoader
    cached: bool = True  # False where decoding is cheaper than reading a cache (digits)


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        image_shape=(3, 32, 32),
        train_pool=50000,
        test_pool=10000,
        source=f"CIFAR-10 python batches, {CIFAR10.url} (auto-download, 170 MB)",
        loader=load_cifar10,
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        image_shape=(3, 32, 32),
        train_pool=50000,
        test_pool=10000,
        source=f"CIFAR-100 python batches, fine labels, {CIFAR100.url} (auto-download, 169 MB)",
        loader=load_cifar100,
    ),
    "digits": DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(1, 8, 8),
        train_pool=digits.TRAIN_POOL,
        test_pool=digits.TEST_POOL,
        source="scikit-learn's bundled 8x8 digits, offline (first 1297 train, last 500 test)",
        loader=digits.load_digits,
        cached=False,
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        train_pool=60000,
        test_pool=10000,
        source="MNIST IDX files in <root>/MNIST/raw, torchvision's layout "
        "(auto-download from its mirrors, 12 MB, md5-checked)",
        loader=load_mnist,
    ),
    "emnist": DatasetInfo(
        name="emnist",
        num_classes=47,
        image_shape=(1, 28, 28),
        train_pool=112800,
        test_pool=18800,
        source="EMNIST balanced IDX files in <root>/EMNIST/raw, images as stored (transposed), "
        f"{EMNIST.source.urls[0]} (auto-download of the zip of all splits, "
        f"md5 {EMNIST.source.md5})",
        loader=load_emnist,
    ),
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet",
        num_classes=200,
        image_shape=(3, 64, 64),
        train_pool=100000,
        test_pool=10000,
        source=f"Tiny-ImageNet-200 release, {TINY_URL} (auto-download, 248 MB, md5 {TINY_MD5}; "
        "test pool = val split)",
        loader=load_tiny_imagenet,
    ),
    **{
        v.name: DatasetInfo(
            name=v.name,
            num_classes=v.num_classes,
            image_shape=v.image_shape,
            train_pool=v.train_pool,
            test_pool=v.test_pool,
            source=f"generated offline, fixed seed; {v.real}'s shape, for speed runs",
            loader=partial(synthetic.load_synthetic, v.name),
            cached=False,  # generating is about as fast as reading a cache
        )
        for v in synthetic.VARIANTS.values()
    },
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``, or a one-line error listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise FedlabError(f"data.dataset: unknown dataset '{name}' (known: {known})") from None


def load_dataset(
    name: str,
    root: str | Path,
    download: bool = True,
    progress: ProgressFn | None = None,
) -> ImageDataset:
    """Decoded uint8 pools of ``name``: from the cache under ``root`` when it is there and
    valid, else decoded from the raw files (downloaded first if allowed) and cached."""
    info = dataset_info(name)
    root = Path(root).expanduser()
    if not info.cached:
        return info.loader(root, download, progress)
    path = cache.cache_path(root, name)
    cached = cache.read_cache(path, name)
    if cached is not None and cached.image_shape == info.image_shape:
        return cached
    dataset = info.loader(root, download, progress)
    cache.write_cache(path, dataset)
    return dataset
