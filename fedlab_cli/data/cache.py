"""Decoded-tensor cache: decode a dataset once, then load its uint8 tensors in a second.

The cache lives at ``<root>/<name>/fedlab-cache-v1.pt``, next to (not inside) the raw files, so
the raw release folders stay exactly as downloaded. It is written to a temp file in the same
directory and renamed into place, so an interrupted run never leaves a half-written cache. A
cache that cannot be read or does not look like a dataset is treated as absent and rebuilt.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from fedlab_cli.atomic import WriteFailedError, atomic_torch_save
from fedlab_cli.data.base import ImageDataset

CACHE_VERSION = 1
_TENSOR_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def cache_path(root: str | Path, name: str) -> Path:
    """Where the decoded tensors of dataset ``name`` are cached under the data root."""
    return Path(root).expanduser() / name / f"fedlab-cache-v{CACHE_VERSION}.pt"


def read_cache(path: Path, name: str) -> ImageDataset | None:
    """The cached dataset, or None when the file is absent, unreadable or malformed."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any corruption (truncated zip, bad pickle, ...) just means "rebuild"
        return None
    if not _looks_valid(payload, name):
        return None
    return ImageDataset(
        name=name,
        train_images=payload["train_images"],
        train_labels=payload["train_labels"],
        test_images=payload["test_images"],
        test_labels=payload["test_labels"],
        num_classes=int(payload["num_classes"]),
    )


def write_cache(path: Path, dataset: ImageDataset) -> None:
    """Atomically write ``dataset`` to ``path``; a failure only warns, since the cache is an
    optimisation and the caller already holds the decoded tensors."""
    payload = {
        "version": CACHE_VERSION,
        "name": dataset.name,
        "num_classes": int(dataset.num_classes),
        **{key: getattr(dataset, key).detach().cpu().contiguous() for key in _TENSOR_KEYS},
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
