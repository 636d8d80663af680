"""Decoded-tensor cache: decode a dataset once, then load its uint8 tensors in a second.

The cache lives at ``<root>/<name>/fedlab-cache-v1.pt``, next to (not inside) the raw files, so
the raw release folders stay exactly as downloaded. It is written to a temp file in the same
directory and renamed into place, so an interrupted run never leaves a half-written cache.

A cache that cannot be read or does not look like a dataset is treated as absent and rebuilt.
So is a *stale* one: the cache records the names, sizes and modification times of the raw files
it was decoded from, and the pool sizes the release must give. Raw files replaced or edited
since, or a cache holding fewer samples than the release, is rebuilt with a notice saying why
(and when the raw files needed for that are gone, the loader refuses, naming them). A cache
whose raw files were all deleted afterwards is still used: that is a supported way to save
disk space.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from fedlab_cli.atomic import WriteFailedError, atomic_torch_save
from fedlab_cli.data import cifar, tiny_imagenet
from fedlab_cli.data.base import ImageDataset, RawSource

CACHE_VERSION = 1
_TENSOR_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


class DatasetCacheNotice(UserWarning):
    """A dataset cache was not used (stale or short) and is being rebuilt."""


def cache_path(root: str | Path, name: str) -> Path:
    """Where the decoded tensors of dataset ``name`` are cached under the data root."""
    return Path(root).expanduser() / name / f"fedlab-cache-v{CACHE_VERSION}.pt"


def raw_source(name: str) -> RawSource | None:
    """The raw files dataset ``name`` is decoded from; None for generated or bundled data."""
    sources = {
        "cifar10": cifar.CIFAR10.raw_source,
        "cifar100": cifar.CIFAR100.raw_source,
        "tinyimagenet": tiny_imagenet.RAW_SOURCE,
    }
    return sources.get(name)


def source_fingerprint(root: Path, source: RawSource) -> dict[str, list[int]]:
    """``{path relative to root: [size, mtime_ns]}`` of the raw files present now."""
    found: dict[str, list[int]] = {}
    for path in source.files(root / source.folder):
        try:
            info = path.stat()
        except OSError:
            continue
        found[path.relative_to(root).as_posix()] = [info.st_size, info.st_mtime_ns]
    return found


def read_cache(path: Path, name: str) -> ImageDataset | None:
    """The cached dataset, or None when the file is absent, unreadable, malformed or stale
    (a ``DatasetCacheNotice`` then says why it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any corruption (truncated zip, bad pickle, ...) just means "rebuild"
        return None
    if not _looks_valid(payload, name):
        return None
    source = raw_source(name)
    if source is not None:
        reason = stale_reason(payload, source, path.parent.parent)
        if reason is not None:
            warnings.warn(
                DatasetCacheNotice(f"dataset cache {path} {reason}; rebuilding it"), stacklevel=2
            )
            return None
    return ImageDataset(
        name=name,
        train_images=payload["train_images"],
        train_labels=payload["train_labels"],
        test_images=payload["test_images"],
        test_labels=payload["test_labels"],
        num_classes=int(payload["num_classes"]),
    )


def stale_reason(payload: dict, source: RawSource, root: Path) -> str | None:
    """Why a structurally valid cache must not be used, or None."""
    for split, expected in (("train", source.train), ("test", source.test)):
        held = len(payload[f"{split}_labels"])
        if expected is not None and held != expected:
            return f"holds {held} {split} images, the release has {expected}"
    current = source_fingerprint(root, source)
    if not current:
        return None  # raw files deleted after decoding: the cache is all there is
    recorded = payload.get("source")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("files"), dict):
        return "does not record its raw files (made by an older fedlab)"
    return _first_difference(recorded["files"], current)


def _first_difference(recorded: dict[str, Any], current: dict[str, list[int]]) -> str | None:
    for name in sorted(set(recorded) | set(current)):
        then, now = recorded.get(name), current.get(name)
        if now is None:
            return f"was made from {name}, which is gone"
        if then is None:
            return f"was made without {name}, which is there now"
        if then[0] != now[0]:
            return f"was made from a {then[0]}-byte {name}, which is {now[0]} bytes now"
        if then[1] != now[1]:
            return f"was made from an older {name} (it was modified since)"
    return None


def write_cache(path: Path, dataset: ImageDataset) -> None:
    """Atomically write ``dataset`` to ``path`` with the fingerprint of its raw files; a
    failure only warns, since the cache is an optimisation and the caller already holds the
    decoded tensors."""
    payload: dict[str, Any] = {
        "version": CACHE_VERSION,
        "name": dataset.name,
        "num_classes": int(dataset.num_classes),
        **{key: getattr(dataset, key).detach().cpu().contiguous() for key in _TENSOR_KEYS},
    }
    source = raw_source(dataset.name)
    if source is not None:
        payload["source"] = {
            "files": source_fingerprint(path.parent.parent, source),
            "train": source.train,
            "test": source.test,
        }
    try:
        atomic_torch_save(payload, path)
    except (OSError, WriteFailedError) as exc:
        warnings.warn(f"could not write dataset cache {path}: {exc}", stacklevel=2)


def _looks_valid(payload: object, name: str) -> bool:
    """Cheap structural checks, so a stale or foreign file is rebuilt rather than trusted."""
    if not isinstance(payload, dict):
        return False
    if payload.get("version") != CACHE_VERSION or payload.get("name") != name:
        return False
    num_classes = payload.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        return False
    if not all(isinstance(payload.get(key), torch.Tensor) for key in _TENSOR_KEYS):
        return False
    for split in ("train", "test"):
        images, labels = payload[f"{split}_images"], payload[f"{split}_labels"]
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
            return False
        if labels.dtype != torch.int64 or labels.shape != (len(images),):
            return False
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            return False
    return payload["train_images"].shape[1:] == payload["test_images"].shape[1:]
