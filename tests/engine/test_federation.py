"""A round's hot path reads nothing back to the host: on a GPU every such read is a sync."""

import functools

import pytest
import torch

from fedlab_cli.data.registry import load_dataset
from fedlab_cli.engine.federation import Federation
from fedlab_cli.engine.session import partition

HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
HOT_PATH = {
    "strategy": ("train", "evaluate"),
    "method": (
        "before_local_training",
        "extra_loss",
        "after_local_step",
        "after_local_training",
        "aggregate",
        "after_aggregate",
    ),
}


@pytest.mark.parametrize("strategy", ["sequential", "vectorized"])
@pytest.mark.parametrize(
    "method",
    [
        {"name": "fedavg"},
        {"name": "fedbn"},
        {"name": "lips", "interval": 1},
        {"name": "lips", "interval": 1, "sparsity": "persistent"},
        {"name": "fedrep"},
        {"name": "pfedsd"},
        {"name": "fedcac"},
    ],
    ids=lambda m: "-".join(map(str, m.values())),
)
def test_hot_path_reads_nothing_back_to_the_host(make_spec, monkeypatch, strategy, method):
    """Training, evaluation and every method hook run three rounds without one tensor read
    (``item``, ``float(t)``, ``if t:``, ...); only the round's logging reads values back."""
    resolved = make_spec(
        method=method, federation={"rounds": 3}, engine={"strategy": strategy, "device": "cpu"}
    )
    dataset = load_dataset(resolved.spec.data.dataset, resolved.spec.data.root)
    fed = Federation(resolved, dataset, partition(resolved.spec, dataset), torch.device("cpu"))
    hot, reads = [False], []

    def watched(name):
        real = getattr(torch.Tensor, name)

        @functools.wraps(real)
        def read(self, *args, **kwargs):
            if hot[0]:
                reads.append(name)
            return real(self, *args, **kwargs)

        return read

    def in_hot_path(real):
        @functools.wraps(real)
        def call(*args, **kwargs):
            outer, hot[0] = hot[0], True
            try:
                return real(*args, **kwargs)
            finally:
                hot[0] = outer

        return call

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, watched(name))
    for owner, names in HOT_PATH.items():
        target = getattr(fed, owner)
        for name in names:
            setattr(target, name, in_hot_path(getattr(target, name)))
    records = [fed.run_round() for _ in range(3)]
    assert reads == []
    assert all(r.acc_agg is not None for r in records)  # the rounds did run and log
