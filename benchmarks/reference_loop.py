"""A reference-style federated loop: how the LIPS code (Fling) executes a round, to time against.

Reference-style means what REFERENCE.md §8.3 lists as what makes the reference slow:

- one ``nn.Module`` per client, kept on the CPU between calls, moved to the device for each
  train and test call and back afterwards, and deep-copied before local training (the snapshot);
- a ``DataLoader`` (``num_workers=0``, shuffled, ``drop_last=False``) over a ``Dataset`` that
  turns each sample into a PIL image and applies the dataset's torchvision transforms one sample
  at a time (as torchvision's CIFAR datasets do); for Tiny-ImageNet, whose reference reads an
  ``ImageFolder``, each access decodes a JPEG (quality 75, as the release's files are) with PIL;
- clients one after another, each with a freshly built ``torch.optim.SGD``; gradient clipping
  after the step (it changes nothing, the reference does it);
- per-client evaluation with a test ``DataLoader`` (batch = the training batch size), before
  and after aggregation;
- FedAvg over every floating state-dict entry, then each client loads the shared entries.

It computes the same thing as fedlab for methods that differ from FedAvg only in what they share
(FedAvg, FedBN, Separate; LIPS without its sparsification step): with full-batch training and no
augmentation its numbers equal fedlab's (tests/benchmarks/test_bench.py checks FedAvg).

Left out, each of which would make this loop slower still, so ratios against it are
conservative: reading the JPEG files from disk (they are decoded from bytes in memory, encoded
once), the start-up pass that transforms every sample to read its label, ``fed_avg`` rebuilding
each client's state dict once per key, LIPS's per-round sorts in ``sync`` and its fp16 gradient
copies. For Tiny-ImageNet the JPEG round trip changes pixels slightly, so there this loop's
accuracies are close to fedlab's, not equal.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from fedlab_cli.data.augment import CIFAR100_MEAN, CIFAR100_STD
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.models import build
from fedlab_cli.spec.model import RunSpec

CLIP_NORM = 3.0


def reference_transforms(dataset: str, augment: bool) -> tuple[T.Compose, T.Compose]:
    """The reference's per-sample torchvision transforms (train, test) for a dataset name;
    a ``synthetic_<name>`` dataset takes ``<name>``'s (REFERENCE.md §2)."""
    base = dataset.removeprefix("synthetic_")
    to_tensor = T.ToTensor()
    if base not in ("cifar100", "tinyimagenet"):  # cifar10, digits: ToTensor only
        return T.Compose([to_tensor]), T.Compose([to_tensor])
    norm = T.Normalize(CIFAR100_MEAN, CIFAR100_STD)
    test = T.Compose([to_tensor, norm])
    if not augment:
        return test, test
    train = [T.RandomHorizontalFlip(0.5), T.RandomRotation(15), to_tensor, norm]
    if base == "cifar100":
        train.append(T.RandomCrop(32, padding=4))
    return T.Compose(train), test


JPEG_DATASETS = ("tinyimagenet",)
"""Datasets whose reference loads each sample from a JPEG file (an ``ImageFolder``)."""
JPEG_QUALITY = 75  # the quantisation tables of the Tiny-ImageNet release's files


class ImagePool:
    """A pool's images as the reference gets them: from an array, or by decoding a JPEG."""

    def __init__(self, hwc: np.ndarray, jpeg: bool) -> None:
        self.hwc, self.jpeg = hwc, jpeg
        self.encoded: dict[int, bytes] = {}  # filled on first use: the "files" on disk

    def image(self, j: int) -> Image.Image:
        pixels = self.hwc[j]
        if not self.jpeg:
            return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        if j not in self.encoded:
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
            self.encoded[j] = buffer.getvalue()
        return Image.open(io.BytesIO(self.encoded[j])).convert("RGB")


class PoolDataset(Dataset):
    """One client's samples of a pool: a PIL image per access, transformed per sample."""

    def __init__(
        self, pool: ImagePool, labels: np.ndarray, indices: np.ndarray, transform: T.Compose
    ) -> None:
        self.pool, self.labels, self.indices, self.transform = pool, labels, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return self.transform(self.pool.image(j)), int(self.labels[j])


@dataclass
class ReferenceResult:
    """Seconds per round, the last round's accuracies (%) and the client models."""

    seconds: list[float] = field(default_factory=list)
    acc_local: list[float] = field(default_factory=list)
    acc_agg: list[float] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)


def run_reference(
    spec: RunSpec,
    dataset: ImageDataset,
    splits: ClientSplits,
    device: torch.device,
    shares: Callable[[str], bool],
    aggregates: bool = True,
    rounds: int | None = None,
) -> ReferenceResult:
    """Run ``rounds`` rounds (default: the spec's) of the reference-style loop, every client
    taking part; ``shares(name)`` says which state-dict entries clients receive back."""
    torch.manual_seed(spec.seed)  # as fedlab does, so both start from the same weights
    template = build(spec.model.name, dataset.num_classes, in_channels=dataset.image_shape[0])
    models = [copy.deepcopy(template) for _ in splits.train]
    train_tf, test_tf = reference_transforms(dataset.name, spec.data.augment)
    batch = spec.training.batch_size
    jpeg = dataset.name.removeprefix("synthetic_") in JPEG_DATASETS
    train_pool = ImagePool(dataset.train_images.permute(0, 2, 3, 1).contiguous().numpy(), jpeg)
    test_pool = ImagePool(dataset.test_images.permute(0, 2, 3, 1).contiguous().numpy(), jpeg)
    train_labels, test_labels = dataset.train_labels.numpy(), dataset.test_labels.numpy()
    loader_rng = torch.Generator().manual_seed(spec.seed)
    train_loaders = [
        DataLoader(
            PoolDataset(train_pool, train_labels, np.asarray(idx), train_tf),
            batch_size=batch,
            shuffle=True,
            generator=loader_rng,
        )
        for idx in splits.train
    ]
    test_loaders = [
        DataLoader(PoolDataset(test_pool, test_labels, np.asarray(idx), test_tf), batch_size=batch)
        for idx in splits.test
    ]
    result = ReferenceResult(models=models)
    for _ in range(rounds if rounds is not None else spec.federation.rounds):
        start = time.perf_counter()
        for model, loader in zip(models, train_loaders, strict=True):
            train_client(model, loader, spec, device)
        result.acc_local = [
            test_client(m, ld, device) for m, ld in zip(models, test_loaders, strict=True)
        ]
        if aggregates:
            fed_avg_and_sync(models, shares)
            result.acc_agg = [
                test_client(m, ld, device) for m, ld in zip(models, test_loaders, strict=True)
            ]
        else:
            result.acc_agg = result.acc_local
        result.seconds.append(time.perf_counter() - start)
    return result


def train_client(model: nn.Module, loader: DataLoader, spec: RunSpec, device: torch.device) -> None:
    """Local epochs of SGD, the way the reference client trains (base_client.py:71-92)."""
    cfg = spec.training
    model.to(device)
    snapshot = copy.deepcopy(model)  # the reference keeps the pre-training model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    model.train()
    for _ in range(cfg.local_epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    del snapshot
    model.to("cpu")


@torch.no_grad()
def test_client(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Accuracy (%) of one client's model on its test split."""
    model.to(device)
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    model.to("cpu")
    return 100.0 * correct / total


test_client.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def fed_avg_and_sync(models: list[nn.Module], shares: Callable[[str], bool]) -> None:
    """Uniform mean of every floating entry; each client loads the shared ones."""
    states = [m.state_dict() for m in models]
    mean = {
        k: torch.stack([s[k] for s in states]).mean(0)
        for k, v in states[0].items()
        if v.is_floating_point()
    }
    for model in models:
        model.load_state_dict({k: v for k, v in mean.items() if shares(k)}, strict=False)
