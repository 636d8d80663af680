"""Client data on the training device: the decoded pools plus every client's sample positions.

Clients may hold different numbers of samples (SSFL's balanced split gives ⌊N/K⌋ or one more,
FedPM's pathological split random sizes): positions are stored padded to the largest client
(``*_idx[c, :size]`` are client c's), with each client's size beside them. Training groups
clients of equal size into blocks, so every block has one step schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedlab_cli.data.augment import Pipeline
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.partition import ClientSplits


def _padded(lists: list[np.ndarray], device: torch.device) -> Tensor:
    width = max((len(p) for p in lists), default=0)
    out = np.zeros((len(lists), width), dtype=np.int64)
    for c, positions in enumerate(lists):
        out[c, : len(positions)] = positions
    return torch.from_numpy(out).to(device)


@dataclass(frozen=True)
class ClientData:
    """Pools stay resident on the device as uint8; a client's batch is an index gather."""

    dataset: ImageDataset
    train_idx: Tensor  # [C, max train size] long, padded
    test_idx: Tensor  # [C, max test size]
    train_sizes: tuple[int, ...]
    test_sizes: tuple[int, ...]
    train_transform: Pipeline
    test_transform: Pipeline

    @classmethod
    def build(
        cls,
        dataset: ImageDataset,
        splits: ClientSplits,
        device: torch.device,
        train_transform: Pipeline,
        test_transform: Pipeline,
    ) -> ClientData:
        return cls(
            dataset=dataset.to(device),
            train_idx=_padded(splits.train, device),
            test_idx=_padded(splits.test, device),
            train_sizes=tuple(len(p) for p in splits.train),
            test_sizes=tuple(len(p) for p in splits.test),
            train_transform=train_transform,
            test_transform=test_transform,
        )

    @property
    def num_clients(self) -> int:
        return len(self.train_sizes)

    @property
    def train_counts(self) -> Tensor:
        """Training samples per client: FedAvg's aggregation weights (float64, on the device)."""
        return self._counts("_train_counts", self.train_sizes)

    @property
    def test_counts(self) -> Tensor:
        """Test samples per client (float64, on the device)."""
        return self._counts("_test_counts", self.test_sizes)

    def _counts(self, cache: str, sizes: tuple[int, ...]) -> Tensor:
        if cache not in self.__dict__:  # once: a host-to-device copy each round would sync
            counts = torch.tensor(sizes, dtype=torch.float64).to(self.train_idx.device)
            object.__setattr__(self, cache, counts)
        return self.__dict__[cache]

    def test_union(self) -> Tensor:
        """The distinct test-pool positions of all clients (the global model's test set)."""
        parts = [self.test_idx[c, :n] for c, n in enumerate(self.test_sizes)]
        return torch.unique(torch.cat(parts)) if parts else self.test_idx.new_zeros(0)


def groups_by_size(clients: list[int], sizes: tuple[int, ...]) -> list[list[int]]:
    """Positions into ``clients``, grouped by the clients' sizes (groups in order of first
    appearance, positions in order): one step schedule per group."""
    groups: dict[int, list[int]] = {}
    for position, client in enumerate(clients):
        groups.setdefault(sizes[client], []).append(position)
    return list(groups.values())
