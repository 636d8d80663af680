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


# --- SSFL's balanced Dirichlet, FedPM's iid and pathological splits ---------------------------

import itertools  # noqa: E402

import torch  # noqa: E402

from fedlab_cli.data.partition import (  # noqa: E402
    balanced_dirichlet,
    draw_slot_classes,
    iid,
    pathological,
)


def statement_balanced_dirichlet(train, test, num_clients, alpha, seed):
    """SSFL's procedure as SPARSE_FL.md §1.1 and partition_utils.py describe it, one slot at a
    time, with Python lists and numpy's own ``choice`` (the implementation emulates it)."""
    rs = np.random.RandomState(seed)
    n, num_classes = len(train), len(set(train.tolist()))
    sizes = [n // num_clients + (1 if i < n % num_clients else 0) for i in range(num_clients)]
    priors = rs.dirichlet([alpha] * num_classes, num_clients)
    pools = [[j for j in range(n) if train[j] == c] for c in range(num_classes)]
    for pool in pools:
        rs.shuffle(pool)
    slots = []
    for i, size in enumerate(sizes):
        slots += [i] * size
    slots = np.array(slots)
    rs.shuffle(slots)
    clients = [[] for _ in range(num_clients)]
    for i in slots:
        available = [c for c in range(num_classes) if len(pools[c]) > 0]
        p = priors[i][available]
        p = p / np.sum(p) if np.sum(p) > 0 else np.full(len(available), 1 / len(available))
        c = rs.choice(available, p=p)
        clients[i].append(pools[c].pop())
    tests = [[] for _ in range(num_clients)]
    for c in range(num_classes):
        members = [j for j in range(len(test)) if test[j] == c]
        have = [sum(1 for j in clients[i] if train[j] == c) for i in range(num_clients)]
        total = sum(have)
        share = [h / total if total else 1 / num_clients for h in have]
        take = [int(s * len(members)) for s in share]
        for i in range(len(members) - sum(take)):
            take[i] += 1
        at = 0
        for i in range(num_clients):
            tests[i] += members[at : at + take[i]]
            at += take[i]
    return clients, tests


BALANCED_CASES = [
    # num_classes, per_class, num_clients, alpha, seed
    (10, 30, 7, 0.3, 0),
    (5, 25, 10, 0.1, 1),
    (20, 20, 3, 1.0, 2),
    (3, 20, 13, 0.5, 3),
    (10, 40, 9, 0.01, 4),
    (4, 12, 11, 100.0, 5),
]


@pytest.mark.parametrize("num_classes, per_class, num_clients, alpha, seed", BALANCED_CASES)
def test_balanced_dirichlet_equals_the_statement(num_classes, per_class, num_clients, alpha, seed):
    train = make_labels(num_classes, per_class, seed)
    test = make_labels(num_classes, per_class, seed + 100)
    ours = balanced_dirichlet(train, test, num_clients, alpha, seed)
    clients, tests = statement_balanced_dirichlet(train, test, num_clients, alpha, seed)
    for a, b in zip(ours.train, clients, strict=True):
        assert a.tolist() == [int(v) for v in b]
    for a, b in zip(ours.test, tests, strict=True):
        assert a.tolist() == b


@pytest.mark.parametrize("num_classes, per_class, num_clients, alpha, seed", BALANCED_CASES)
def test_balanced_dirichlet_sizes_cover_both_pools_once(
    num_classes, per_class, num_clients, alpha, seed
):
    train = make_labels(num_classes, per_class, seed)
    test = make_labels(num_classes, per_class, seed + 100)
    splits = balanced_dirichlet(train, test, num_clients, alpha, seed)
    n, k = len(train), num_clients
    sizes = [len(t) for t in splits.train]
    assert sizes == [n // k + 1] * (n % k) + [n // k] * (k - n % k)
    assert sorted(np.concatenate(splits.train).tolist()) == list(range(n))
    assert sorted(np.concatenate(splits.test).tolist()) == list(range(len(test)))
    assert all(t.dtype == np.int64 for t in splits.train + splits.test)


def test_balanced_dirichlet_skew_grows_as_alpha_shrinks():
    """Mean share of a client's largest class: IID-like at alpha 100, skewed at 0.05 (the
    balance constraint keeps it from reaching 1)."""
    train, test = make_labels(10, 200, seed=1), make_labels(10, 100, seed=2)

    def skew(alpha):
        splits = balanced_dirichlet(train, test, 10, alpha, seed=3)
        return np.mean([np.bincount(train[t], minlength=10).max() / len(t) for t in splits.train])

    assert skew(100.0) < 0.25 < skew(0.3) < skew(0.05)


def test_balanced_dirichlet_is_determined_by_the_seed():
    train, test = make_labels(10, 30, 0), make_labels(10, 10, 1)
    a = balanced_dirichlet(train, test, 8, 0.3, seed=11)
    b = balanced_dirichlet(train, test, 8, 0.3, seed=11)
    c = balanced_dirichlet(train, test, 8, 0.3, seed=12)
    assert all(
        np.array_equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test, strict=True)
    )
    assert not all(np.array_equal(x, y) for x, y in zip(a.train, c.train, strict=True))


def test_slot_classes_fall_back_to_uniform_where_priors_are_zero():
    """Client 0 wants only class 0; once class 0 is used up its priors on what is left are 0,
    and it draws uniformly among the remaining classes (the official choice would fail)."""
    priors = np.array([[1.0, 0.0, 0.0], [0.0, 0.2, 0.8]])
    pool_sizes = np.array([2, 3, 3])
    slots = np.array([0, 0, 0, 1, 0, 1, 0, 1])
    uniforms = np.random.RandomState(0).random_sample(len(slots))
    got = draw_slot_classes(priors, slots, pool_sizes, uniforms).tolist()

    rs = np.random.RandomState(0)
    left = pool_sizes.tolist()
    expected = []
    for i in slots:
        available = [c for c in range(3) if left[c] > 0]
        p = priors[i][available]
        p = p / p.sum() if p.sum() > 0 else np.full(len(available), 1 / len(available))
        c = int(rs.choice(available, p=p))
        left[c] -= 1
        expected.append(c)
    assert got == expected
    assert got[:2] == [0, 0] and got[2] in (1, 2)
    assert sorted(got) == [0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("chunk", [1, 5, 64, 8192])
def test_slot_classes_do_not_depend_on_the_chunk_size(chunk):
    """Chunk boundaries and class exhaustion at any point: numpy's choice, slot by slot."""
    rs = np.random.RandomState(8)
    priors = rs.dirichlet(np.full(6, 0.2), 9)
    pool_sizes = rs.randint(5, 40, 6)
    slots = rs.permutation(np.arange(pool_sizes.sum()) % 9)
    uniforms = np.random.RandomState(1).random_sample(len(slots))
    got = draw_slot_classes(priors, slots, pool_sizes, uniforms, chunk=chunk)

    choices, left, expected = np.random.RandomState(1), pool_sizes.tolist(), []
    for i in slots:
        available = [c for c in range(6) if left[c] > 0]
        p = priors[i][available]
        c = int(choices.choice(available, p=p / np.sum(p)))
        left[c] -= 1
        expected.append(c)
    assert got.tolist() == expected and left == [0] * 6


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda y: balanced_dirichlet(y, y, 0, 0.3, 0), "data.num_clients: must be at least 1"),
        (lambda y: balanced_dirichlet(y, y, 61, 0.3, 0), "data.num_clients: 61 clients exceed"),
        (lambda y: balanced_dirichlet(y, y, 5, 0.0, 0), "data.alpha: must be a positive number"),
        (lambda y: balanced_dirichlet(y, y, 5, 1e-5, 0), "data.alpha: 1e-05 is too small"),
        (lambda y: balanced_dirichlet(y, y, 5, 0.3, -1), "seed: must lie in 0..4294967295"),
        (lambda y: balanced_dirichlet(y + 1, y, 5, 0.3, 0), "train labels must cover 0..C-1"),
        (lambda y: balanced_dirichlet(y, y[:7], 30, 0.3, 0), "without test samples"),
        (lambda y: iid(y, y[:4], 5, 0), "data.num_clients: 5 clients exceed the test pool of 4"),
        (lambda y: pathological(y, y, 5, 0, 0), "data.classes_per_client: 0 is out of range 1..6"),
        (lambda y: pathological(y, y, 5, 7, 0), "data.classes_per_client: 7 is out of range"),
        (lambda y: pathological(y, y, 61, 2, 0), "data.num_clients: 61 clients exceed the train"),
        (lambda y: pathological(y, y, 40, 2, 0), "data.num_clients: 40 clients leave client"),
    ],
)
def test_bad_combinations_are_one_line_errors_naming_the_field(call, fragment):
    labels = np.arange(60) % 6
    with pytest.raises(FedlabError) as info:
        call(labels)
    assert fragment in str(info.value) and "\n" not in str(info.value)


IID_CASES = [(100, 30, 7, 0), (101, 17, 10, 1), (50, 50, 50, 2), (10, 3, 3, 3)]


@pytest.mark.parametrize("n_train, n_test, num_clients, seed", IID_CASES)
def test_iid_equals_torch_random_split_with_fedpms_lengths(n_train, n_test, num_clients, seed):
    """FedPM calls random_split with int(N / K) for all but the last client (load_dataset.py)."""
    train, test = np.arange(n_train) % 5, np.arange(n_test) % 5
    splits = iid(train, test, num_clients, seed)
    generator = torch.Generator().manual_seed(seed)
    for pool, ours in ((n_train, splits.train), (n_test, splits.test)):
        lengths = [int(pool / num_clients)] * (num_clients - 1)
        lengths.append(pool - int(pool / num_clients) * (num_clients - 1))
        theirs = torch.utils.data.random_split(range(pool), lengths, generator=generator)
        assert [a.tolist() for a in ours] == [list(s) for s in theirs]
        assert [len(a) for a in ours] == lengths
        assert sorted(np.concatenate(ours).tolist()) == list(range(pool))


def test_iid_is_determined_by_the_seed():
    labels = np.arange(90) % 3
    a, b, c = iid(labels, labels, 4, 5), iid(labels, labels, 4, 5), iid(labels, labels, 4, 6)
    assert all(
        np.array_equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test, strict=True)
    )
    assert not np.array_equal(a.train[0], c.train[0])


def statement_pathological(train, num_clients, classes_per_client, seed):
    """FedPM's clients_rand + split_image_data as SPARSE_FL.md §2.2 describes them, with lists."""
    rs = np.random.RandomState(seed)
    n, num_classes = len(train), int(max(train)) + 1
    weights = rs.randint(10, 100, num_clients)
    floors = [int(np.floor(w / np.sum(weights) * n)) for w in weights]
    sizes = [*floors[:-1], floors[-1] + n - sum(floors)]
    quota = [max(1, s // classes_per_client) for s in sizes]
    lists = [[] for _ in range(num_classes)]
    for j, label in enumerate(train):
        lists[label].append(j)
    for items in lists:
        rs.shuffle(items)
    clients = []
    for i in range(num_clients):
        mine, budget, c = [], sizes[i], rs.randint(num_classes)
        while budget > 0:
            take = min(quota[i], len(lists[c]), budget)
            mine += lists[c][:take]
            lists[c] = lists[c][take:]
            budget -= take
            c = (c + 1) % num_classes
        clients.append(mine)
    return clients


PATHOLOGICAL_CASES = [
    # num_classes, per_class, num_clients, classes_per_client, seed
    (10, 40, 5, 2, 0),
    (10, 40, 10, 1, 1),
    (5, 60, 8, 3, 2),
    (47, 10, 6, 4, 3),
    (3, 30, 2, 3, 4),
]


@pytest.mark.parametrize("num_classes, per_class, num_clients, cpc, seed", PATHOLOGICAL_CASES)
def test_pathological_equals_the_statement(num_classes, per_class, num_clients, cpc, seed):
    train = make_labels(num_classes, per_class, seed)
    test = make_labels(num_classes, 5, seed + 1)
    splits = pathological(train, test, num_clients, cpc, seed)
    expected = statement_pathological(train, num_clients, cpc, seed)
    assert [t.tolist() for t in splits.train] == [[int(v) for v in e] for e in expected]
    assert sorted(np.concatenate(splits.train).tolist()) == list(range(len(train)))
    assert all(len(np.unique(t)) == len(t) for t in splits.train)
    # FedPM scores on the whole test set: every client's test split is the whole pool.
    assert all(t.tolist() == list(range(len(test))) for t in splits.test)


def test_pathological_first_client_holds_a_run_of_consecutive_classes():
    """Before any class runs out, a client takes ``quota = size // cpc`` samples from each of
    ``cpc`` consecutive classes (mod C), then the rest of its size from the next one."""
    train = np.repeat(np.arange(20), 1000)  # quota stays below 1000: no class runs out
    splits = pathological(train, train[:10], 10, 12, seed=7)
    sizes = [len(t) for t in splits.train]
    assert len(set(sizes)) > 1 and sum(sizes) == len(train)  # sizes from random weights
    first = train[splits.train[0]].tolist()
    order = list(dict.fromkeys(first))  # classes in the order they were taken
    assert all((b - a) % 20 == 1 for a, b in itertools.pairwise(order))
    quota, rest = divmod(sizes[0], 12)
    assert [first.count(c) for c in order] == [quota] * 12 + ([rest] if rest else [])


def test_pathological_is_determined_by_the_seed():
    train = make_labels(10, 50, 0)
    a, b = pathological(train, train, 6, 2, 9), pathological(train, train, 6, 2, 9)
    c = pathological(train, train, 6, 2, 10)
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.train, c.train, strict=True))
