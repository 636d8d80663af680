"""Dirichlet label-skew partition, bit-compatible with the LIPS reference procedure.

REFERENCE.md §2 and decision 11: one ``RandomState(seed).dirichlet`` draw of shape
clients x classes, then, client by client and class by class, a ``choice`` from that class's
sample positions — without replacement when the class is large enough, with replacement
otherwise. Every (client, class) pair makes its ``choice`` call, zero counts included: legacy
``choice`` without replacement permutes the whole class even for size 0, so skipping one would
shift every later draw. Clients may share samples. Train and test pools are split separately
with the same seed, so both follow the same class proportions ``q``.

Appended after it: the partitions of the sparse-FL papers (SPARSE_FL.md) — SSFL's
``balanced_dirichlet`` and FedPM's ``iid`` and ``pathological`` — which split each pool without
replacement and may give clients different sample counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


# --- The sparse-FL papers' partitions (SPARSE_FL.md §1.1 step 4, §2.2) ----------------------
#
# Unlike ``split_clients`` these split each pool without replacement, so a client's positions are
# unique and clients may hold different numbers of samples. Each is fully determined by ``seed``.

_MAX_SEED = 2**32 - 1  # numpy's RandomState takes 32-bit seeds
_NO_INDICES = np.zeros(0, dtype=np.int64)


def balanced_dirichlet(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
) -> ClientSplits:
    """SSFL's balanced Dirichlet split (riohib/SSFL@83fc11d, ``data_preprocessing/
    partition_utils.py``: ``partition_data_dirichlet``, ``partition_test_data_proportional``).

    Train pool: every client gets ⌊N/K⌋ samples, the first N mod K one more. With one
    ``RandomState(seed)``, in the official call order: class priors ``dirichlet(α·1, K)``; each
    class's positions (ascending) shuffled, class by class; the list of client slots shuffled;
    then, slot by slot, a class drawn from the slot's client's priors renormalised over the
    classes that still have samples (``choice`` with ``p``: one uniform per slot), and the last
    remaining sample of that class's shuffled list taken. Run under ``np.random.seed(seed)`` the
    official code makes the same calls, so the splits are identical to its (checked on CIFAR-10
    and CIFAR-100-sized pools). Here the slot loop is vectorised (``draw_slot_classes``).

    Test pool: no randomness. For each class, its test positions (ascending) are cut into
    contiguous runs, client by client, of ⌊share·n⌋ each, share = the client's fraction of that
    class's training samples (computed in floating point as the official code does); the first
    (n − Σ⌊share·n⌋) clients get one more — whether or not they hold that class, as there.
    Each client's test positions are thus grouped by class.

    Where the official code is silent or would fail, and we chose:
    - a client's priors may be exactly 0 on every class still available (only when the
      Dirichlet draw underflows, α ≲ 0.01); the official ``choice`` then fails on NaN
      probabilities, here that slot draws uniformly among the available classes;
    - a prior row that is entirely NaN (every gamma variate underflowed) is an error naming
      ``data.alpha``, as is a client left without test samples (``data.num_clients``).
    """
    train_labels, num_classes = _dense_labels(train_labels, "train")
    test_labels = _labels_below(test_labels, num_classes, "test")
    _check_seed(seed)
    _check_client_count(num_clients, len(train_labels), "train")
    if not (np.isfinite(alpha) and alpha > 0):
        raise FedlabError(f"data.alpha: must be a positive number, got {alpha}")
    rng = np.random.RandomState(seed)
    sizes = balanced_sizes(len(train_labels), num_clients)
    priors = rng.dirichlet(np.repeat(float(alpha), num_classes), size=num_clients)
    if not np.isfinite(priors).all():
        client = int(np.flatnonzero(~np.isfinite(priors).all(axis=1))[0])
        raise FedlabError(
            f"data.alpha: {alpha} is too small: the Dirichlet draw underflowed to 0/0 for "
            f"client {client}; use a larger alpha"
        )
    pools = []
    for c in range(num_classes):
        pool = np.flatnonzero(train_labels == c)
        rng.shuffle(pool)
        pools.append(pool)
    slots = np.repeat(np.arange(num_clients), sizes)
    rng.shuffle(slots)
    uniforms = rng.random_sample(len(slots))  # choice(p=...) draws exactly one per slot
    pool_sizes = np.array([len(pool) for pool in pools], dtype=np.int64)
    classes = draw_slot_classes(priors, slots, pool_sizes, uniforms)

    # The k-th draw of class c (k = 0, 1, ...) pops the k-th sample from the end of its pool.
    order = np.argsort(classes, kind="stable")
    group_start = np.concatenate([[0], np.cumsum(np.bincount(classes, minlength=num_classes))])
    rank = np.empty(len(classes), dtype=np.int64)
    rank[order] = np.arange(len(classes)) - group_start[classes[order]]
    samples = np.empty(len(classes), dtype=np.int64)
    for c in range(num_classes):
        taken = classes == c
        samples[taken] = pools[c][pool_sizes[c] - 1 - rank[taken]]
    by_client = samples[np.argsort(slots, kind="stable")]  # each client's in slot order
    train = np.split(by_client, np.cumsum(sizes)[:-1])

    counts = np.stack([np.bincount(train_labels[t], minlength=num_classes) for t in train])
    test = proportional_test_split(test_labels, counts)
    empty = [i for i, t in enumerate(test) if len(t) == 0]
    if empty:
        raise FedlabError(
            f"data.num_clients: {num_clients} clients leave client {empty[0]} without test "
            f"samples (test pool of {len(test_labels)}); use fewer clients"
        )
    return ClientSplits(train=train, test=test)


def balanced_sizes(pool: int, num_clients: int) -> np.ndarray:
    """⌊pool/K⌋ per client, the first ``pool mod K`` clients one more (SSFL)."""
    sizes = np.full(num_clients, pool // num_clients, dtype=np.int64)
    sizes[: pool % num_clients] += 1
    return sizes


def draw_slot_classes(
    priors: np.ndarray,
    slots: np.ndarray,
    pool_sizes: np.ndarray,
    uniforms: np.ndarray,
    chunk: int = 8192,
) -> np.ndarray:
    """The class each slot draws in SSFL's assignment loop, given one uniform per slot.

    Slot by slot, this is: the classes that still have samples; the slot's client's priors on
    them, divided by their sum (uniform if the sum is 0); ``cdf = cumsum``, ``cdf /= cdf[-1]``; the
    class at ``searchsorted(cdf, u, 'right')`` — numpy's legacy ``choice`` with ``p`` — after which
    that class has one sample less. The available classes only change when a class runs out,
    so the slots up to the next exhaustion are drawn together, ``chunk`` slots at a time (which
    bounds memory to ``chunk`` x classes floats; the result does not depend on it).
    """
    remaining = pool_sizes.astype(np.int64).copy()
    if int(remaining.sum()) < len(slots):
        raise ValueError(f"{len(slots)} slots for {int(remaining.sum())} samples")
    num_classes = len(remaining)
    classes = np.empty(len(slots), dtype=np.int64)
    start = 0
    cdfs = None
    while start < len(slots):
        if cdfs is None:
            available = np.flatnonzero(remaining > 0)
            cdfs = _choice_cdfs(priors[:, available])
        stop = min(start + chunk, len(slots))
        rows = cdfs[slots[start:stop]]
        picks = available[(rows <= uniforms[start:stop, None]).sum(axis=1)]
        counts = np.bincount(picks, minlength=num_classes)
        exhausted = available[counts[available] >= remaining[available]]
        if len(exhausted):
            # Keep the slots up to the one that takes the last sample of some class.
            order = np.argsort(picks, kind="stable")
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            stop = start + int(order[first[exhausted] + remaining[exhausted] - 1].min()) + 1
            picks = picks[: stop - start]
            cdfs = None  # the available classes change
        classes[start:stop] = picks
        remaining -= np.bincount(picks, minlength=num_classes)
        start = stop
    return classes


def _choice_cdfs(weights: np.ndarray) -> np.ndarray:
    """Per row: normalise (uniform if the row sums to 0), then numpy ``choice``'s cdf."""
    total = weights.sum(axis=1, keepdims=True)
    zero = total[:, 0] == 0
    if zero.any():
        weights = np.where(zero[:, None], 1.0, weights)
        total = np.where(zero[:, None], float(weights.shape[1]), total)
    cdf = (weights / total).cumsum(axis=1)
    cdf /= cdf[:, -1:]
    return cdf


def proportional_test_split(test_labels: np.ndarray, train_counts: np.ndarray) -> list[np.ndarray]:
    """SSFL's test split: each class's test positions cut in proportion to the clients' training
    counts of that class (``train_counts`` is clients x classes); see ``balanced_dirichlet``."""
    num_clients, num_classes = train_counts.shape
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in range(num_classes):
        members = np.flatnonzero(test_labels == c)
        column = train_counts[:, c]
        total = column.sum()
        share = column / total if total > 0 else np.ones(num_clients) / num_clients
        counts = (share * len(members)).astype(np.int64)
        counts[: len(members) - int(counts.sum())] += 1
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for i in range(num_clients):
            parts[i].append(members[bounds[i] : bounds[i + 1]])
    return [np.concatenate(p).astype(np.int64) if p else _NO_INDICES for p in parts]


def iid(
    train_labels: np.ndarray, test_labels: np.ndarray, num_clients: int, seed: int
) -> ClientSplits:
    """FedPM's IID split (``utils/load_dataset.py``, ``split_dataset``), of each pool.

    FedPM calls ``torch.utils.data.random_split`` with lengths ⌊N/K⌋ for the first K−1 clients
    and the rest, N − (K−1)·⌊N/K⌋, for the last: the last client, not the first N mod K, holds
    the remainder. random_split is one ``randperm(N)`` cut into consecutive runs. Here the
    generator is ``torch.Generator().manual_seed(seed)``; the train pool is split first, the
    test pool with the next draw of the same generator. (FedPM itself never splits its test
    set — it scores the global model on all of it; the union of these test splits is that set.)
    """
    _check_seed(seed)
    _check_client_count(num_clients, len(train_labels), "train")
    _check_client_count(num_clients, len(test_labels), "test")
    generator = torch.Generator().manual_seed(seed)
    return ClientSplits(
        train=_random_runs(len(train_labels), num_clients, generator),
        test=_random_runs(len(test_labels), num_clients, generator),
    )


def fedpm_iid_sizes(pool: int, num_clients: int) -> np.ndarray:
    """⌊pool/K⌋ for the first K−1 clients, the remainder for the last (FedPM)."""
    sizes = np.full(num_clients, pool // num_clients, dtype=np.int64)
    sizes[-1] = pool - (num_clients - 1) * (pool // num_clients)
    return sizes


def _random_runs(pool: int, num_clients: int, generator: torch.Generator) -> list[np.ndarray]:
    permutation = torch.randperm(pool, generator=generator).numpy().astype(np.int64)
    return np.split(permutation, np.cumsum(fedpm_iid_sizes(pool, num_clients))[:-1])


def pathological(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_clients: int,
    classes_per_client: int,
    seed: int,
) -> ClientSplits:
    """FedPM's non-IID split (``utils/get_split_dataset.py``: ``clients_rand``,
    ``split_image_data``), with one ``RandomState(seed)`` in the official call order.

    1. Client sizes: weights ``randint(10, 100, K)`` (U{10..99}), ``⌊w/Σw · N⌋`` each, the last
       client takes what flooring left over.
    2. Each class's positions (ascending), shuffled class by class.
    3. Client by client: a start class ``randint(C)``; then, while the client's budget lasts,
       take ``min(quota, left in the class, budget)`` samples from the front of the class's
       list and move to the next class (mod C), quota = max(1, ⌊size / classes_per_client⌋).
       So a client holds ``classes_per_client`` consecutive classes, plus part of one more when
       its size does not divide evenly, and skips past classes already used up.

    Test pool: FedPM does not split it; it scores the global model on the whole test set
    (batch 100, unshuffled). So every client's test positions are the whole pool, 0..M−1: a
    global accuracy over the union is exactly FedPM's number. The final per-client shuffle of
    FedPM (``shuffle_list``, Python's ``random``) only reorders samples within a client and is
    left out: positions here are in the order they were taken.

    C is max(label) + 1, as there. A client whose size floors to 0 is an error naming
    ``data.num_clients`` (FedPM would hand it an empty loader).
    """
    train_labels = _labels_below(train_labels, None, "train")
    _check_seed(seed)
    _check_client_count(num_clients, len(train_labels), "train")
    num_classes = int(train_labels.max()) + 1
    if not 1 <= classes_per_client <= num_classes:
        raise FedlabError(
            f"data.classes_per_client: {classes_per_client} is out of range 1..{num_classes}"
        )
    test_labels = _labels_below(test_labels, None, "test")
    rng = np.random.RandomState(seed)
    weights = rng.randint(10, 100, num_clients)
    sizes = np.floor((weights / np.sum(weights)) * len(train_labels)).astype(np.int64)
    sizes[-1] += len(train_labels) - sizes.sum()
    if (sizes == 0).any():
        raise FedlabError(
            f"data.num_clients: {num_clients} clients leave client {int(np.argmin(sizes))} "
            f"without training samples (sizes from U{{10..99}} weights over "
            f"{len(train_labels)} samples); use fewer clients"
        )
    quotas = np.maximum(1, sizes // classes_per_client)
    pools = []
    for c in range(num_classes):
        pool = np.flatnonzero(train_labels == c)
        rng.shuffle(pool)
        pools.append(pool)
    heads = np.zeros(num_classes, dtype=np.int64)  # how many each class has handed out
    train = []
    for i in range(num_clients):
        c = int(rng.randint(num_classes))
        budget = int(sizes[i])
        runs = []
        while budget > 0:
            take = min(int(quotas[i]), len(pools[c]) - int(heads[c]), budget)
            runs.append(pools[c][heads[c] : heads[c] + take])
            heads[c] += take
            budget -= take
            c = (c + 1) % num_classes
        train.append(np.concatenate(runs).astype(np.int64))
    test = [np.arange(len(test_labels), dtype=np.int64) for _ in range(num_clients)]
    return ClientSplits(train=train, test=test)


def _dense_labels(labels: np.ndarray, pool: str) -> tuple[np.ndarray, int]:
    """Integer labels covering 0..C-1 with every class present, and C."""
    labels = _labels_below(labels, None, pool)
    present = np.unique(labels)
    if present[0] != 0 or present[-1] != len(present) - 1:
        raise FedlabError(
            f"data: {pool} labels must cover 0..C-1, got classes {present[:10].tolist()}"
        )
    return labels, len(present)


def _labels_below(labels: np.ndarray, limit: int | None, pool: str) -> np.ndarray:
    """A non-empty 1-D integer label array with values in 0..limit-1 (or any >= 0)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise FedlabError(
            f"data: {pool} labels must be a non-empty 1-D integer array, got "
            f"{labels.dtype} {labels.shape}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (limit is not None and high >= limit):
        bound = "" if limit is None else f"..{limit - 1}"
        raise FedlabError(f"data: {pool} labels must lie in 0{bound}, got {low}..{high}")
    return labels.astype(np.int64, copy=False)


def _check_client_count(num_clients: int, pool: int, name: str) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise FedlabError(f"data.num_clients: must be an integer, got {num_clients!r}")
    if num_clients < 1:
        raise FedlabError(f"data.num_clients: must be at least 1, got {num_clients}")
    if num_clients > pool:
        raise FedlabError(
            f"data.num_clients: {num_clients} clients exceed the {name} pool of {pool} samples"
        )


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise FedlabError(f"seed: must be an integer, got {seed!r}")
    if not 0 <= seed <= _MAX_SEED:
        raise FedlabError(f"seed: must lie in 0..{_MAX_SEED}, got {seed}")
