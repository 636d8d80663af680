"""Client data on the training device: the decoded pools plus every client's sample positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedlab_cli.data.augment import BatchTransform
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.partition import ClientSplits


@dataclass(frozen=True)
class ClientData:
    """Pools stay resident on the device as uint8; a client's batch is an index gather."""

    dataset: ImageDataset
    train_idx: Tensor  # [C, n_train] long, every client has the same count
    test_idx: Tensor  # [C, n_test]
    train_transform: BatchTransform
    test_transform: BatchTransform

    @classmethod
    def build(
        cls,
        dataset: ImageDataset,
        splits: ClientSplits,
        device: torch.device,
        train_transform: BatchTransform,
        test_transform: BatchTransform,
    ) -> ClientData:
        return cls(
            dataset=dataset.to(device),
            train_idx=torch.from_numpy(np.stack(splits.train)).to(device),
            test_idx=torch.from_numpy(np.stack(splits.test)).to(device),
            train_transform=train_transform,
            test_transform=test_transform,
        )

    @property
    def train_counts(self) -> Tensor:
        """Training samples per client: FedAvg's aggregation weights."""
        count, n = self.train_idx.shape
        return torch.full((count,), n, dtype=torch.float64, device=self.train_idx.device)
