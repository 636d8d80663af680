"""The Dirichlet partition must give the reference's index lists for the same seed."""

import numpy as np
import pytest

from fedlab_cli.data.partition import ClientSplits, class_counts, dirichlet, split_clients
from fedlab_cli.errors import FedlabError


def reference_dirichlet(labels, client_number, sample_num, seed, alpha):
    """The reference procedure written out literally (REFERENCE.md §2), lists and all."""
    labels = np.array(labels)
    num_classes = len(np.unique(labels))
    idxs_classes = [[] for _ in range(num_classes)]
    for i in range(len(labels)):
        idxs_classes[labels[i]].append(i)
    client_indexes = [[] for _ in range(client_number)]
    random_state = np.random.RandomState(seed)
    q = random_state.dirichlet(np.repeat(alpha, num_classes), client_number)
    for i in range(client_number):
        taken = 0
        for j in range(num_classes):
            last = j == num_classes - 1
            n = sample_num - taken if last else int(sample_num * q[i][j] + 0.5)
            n = max(min(n, sample_num - taken), 0)
            taken += n
            chosen = random_state.choice(idxs_classes[j], n, replace=(n > len(idxs_classes[j])))
            client_indexes[i] += list(chosen)
        client_indexes[i] = np.array(client_indexes[i])
    return client_indexes


def make_labels(num_classes, per_class, seed):
    """Shuffled labels with uneven class sizes, as a real pool's file order has."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(max(per_class // 3, 1), per_class + 1, size=num_classes)
    labels = np.concatenate([np.full(s, j) for j, s in enumerate(sizes)])
    return rng.permutation(labels)


@pytest.mark.parametrize(
    "num_classes, alpha, num_clients, per_client, seed",
    [
        (10, 0.1, 100, 100, 0),
        (10, 0.5, 20, 100, 1),
        (10, 1.0, 7, 60, 2),
        (100, 0.01, 50, 400, 2),  # one class takes almost everything: with replacement
        (100, 0.1, 30, 100, 3),
        (200, 0.1, 10, 300, 4),
        (5, 100.0, 3, 17, 5),
    ],
)
def test_partition_equals_reference(num_classes, alpha, num_clients, per_client, seed):
    labels = make_labels(num_classes, per_class=60, seed=seed)
    ours = dirichlet(labels, num_clients, alpha, per_client, seed)
    theirs = reference_dirichlet(labels, num_clients, per_client, seed, alpha)
    assert len(ours) == num_clients
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
        assert len(a) == per_client


def test_small_classes_are_drawn_with_replacement():
    """At alpha 0.01 a client wants ~all samples from one class that holds only a few."""
    labels = make_labels(100, per_class=10, seed=7)
    clients = dirichlet(labels, 20, 0.01, 400, 7)
    has_duplicates = any(len(np.unique(c)) < len(c) for c in clients)
    assert has_duplicates
    for c in clients:
        assert len(c) == 400 and c.max() < len(labels)


def test_class_counts_sum_and_rounding():
    counts = class_counts(np.array([0.125, 0.125, 0.25, 0.5]), 10)
    # int(10*0.125+0.5)=1, 1, int(3.0)=3, last takes the remainder 5
    assert counts.tolist() == [1, 1, 3, 5]
    counts = class_counts(np.array([0.6, 0.6, 0.0]), 10)  # capped: never above n
    assert counts.tolist() == [6, 4, 0]


def test_train_and_test_follow_the_same_proportions():
    train = make_labels(10, 80, seed=1)
    test = make_labels(10, 40, seed=2)
    splits = split_clients(train, test, 10, 0.1, 50, 50, seed=3)
    for tr, te in zip(splits.train, splits.test, strict=True):
        np.testing.assert_array_equal(
            np.bincount(train[tr], minlength=10), np.bincount(test[te], minlength=10)
        )


def test_split_refuses_more_samples_than_the_pool():
    labels = make_labels(3, 10, seed=0)
    with pytest.raises(FedlabError, match=r"data.test_per_client: 999 exceeds the pool"):
        split_clients(labels, labels, 2, 0.5, 5, 999, seed=0)


def test_splits_round_trip_through_json():
    labels = make_labels(4, 20, seed=0)
    splits = split_clients(labels, labels, 3, 0.5, 7, 5, seed=0)
    again = ClientSplits.from_json(splits.to_json())
    for a, b in zip(splits.train + splits.test, again.train + again.test, strict=True):
        np.testing.assert_array_equal(a, b)
