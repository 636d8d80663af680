"""Dirichlet label-skew partition, bit-compatible with the LIPS reference procedure.

REFERENCE.md §2 and decision 11: one ``RandomState(seed).dirichlet`` draw of shape
clients x classes, then, client by client and class by class, a ``choice`` from that class's
sample positions — without replacement when the class is large enough, with replacement
otherwise. Every (client, class) pair makes its ``choice`` call, zero counts included: legacy
``choice`` without replacement permutes the whole class even for size 0, so skipping one would
shift every later draw. Clients may share samples. Train and test pools are split separately
with the same seed, so both follow the same class proportions ``q``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlab_cli.errors import FedlabError


def class_counts(q_row: np.ndarray, per_client: int) -> np.ndarray:
    """Samples per class for one client: round each share, cap the running total, last class
    takes the remainder — so every client gets exactly ``per_client`` samples."""
    counts = np.zeros(len(q_row), dtype=np.int64)
    taken = 0
    for j, share in enumerate(q_row):
        wanted = per_client - taken if j == len(q_row) - 1 else int(per_client * share + 0.5)
        counts[j] = max(min(wanted, per_client - taken), 0)
        taken += counts[j]
    return counts


def dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, per_client: int, seed: int
) -> list[np.ndarray]:
    """Per-client sample positions into ``labels`` (labels must be 0..C-1, every class present)."""
    labels = np.asarray(labels)
    num_classes = len(np.unique(labels))
    if labels.min() != 0 or labels.max() != num_classes - 1:
        raise FedlabError(f"data: labels must cover 0..C-1, got classes {np.unique(labels)[:10]}")
    members = [np.flatnonzero(labels == j) for j in range(num_classes)]
    rng = np.random.RandomState(seed)
    q = rng.dirichlet(np.full(num_classes, alpha), num_clients)
    clients = []
    for i in range(num_clients):
        counts = class_counts(q[i], per_client)
        picks = [
            rng.choice(members[j], counts[j], replace=bool(counts[j] > len(members[j])))
            for j in range(num_classes)
        ]
        clients.append(np.concatenate(picks).astype(np.int64))
    return clients


@dataclass(frozen=True)
class ClientSplits:
    """Each client's sample positions in the train pool and in the test pool."""

    train: list[np.ndarray]
    test: list[np.ndarray]

    def to_json(self) -> dict:
        return {
            "num_clients": len(self.train),
            "clients": [
                {"train": tr.tolist(), "test": te.tolist()}
                for tr, te in zip(self.train, self.test, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> ClientSplits:
        clients = data["clients"]
        return cls(
            train=[np.asarray(c["train"], dtype=np.int64) for c in clients],
            test=[np.asarray(c["test"], dtype=np.int64) for c in clients],
        )


def split_clients(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_clients: int,
    alpha: float,
    train_per_client: int,
    test_per_client: int,
    seed: int,
) -> ClientSplits:
    """Partition both pools with the same seed, so test skew follows train skew."""
    for field, wanted, pool in (
        ("data.train_per_client", train_per_client, len(train_labels)),
        ("data.test_per_client", test_per_client, len(test_labels)),
    ):
        if wanted > pool:
            raise FedlabError(f"{field}: {wanted} exceeds the pool of {pool} samples")
    return ClientSplits(
        train=dirichlet(train_labels, num_clients, alpha, train_per_client, seed),
        test=dirichlet(test_labels, num_clients, alpha, test_per_client, seed),
    )
