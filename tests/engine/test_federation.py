"""A round's hot path reads nothing back to the host: on a GPU every such read is a sync."""

import pytest
from support import HostReadWatch

from fedlab_cli.engine.build import build_federation

HOT_PATH = {
    "strategy": ("train", "evaluate"),
    "method": (
        "before_local_training",
        "extra_loss",
        "transform_gradients",
        "after_step",
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
        {"name": "ssfl"},
        {"name": "ssfl", "warmup_rounds": 1},
    ],
    ids=lambda m: "-".join(map(str, m.values())),
)
def test_hot_path_reads_nothing_back_to_the_host(make_spec, monkeypatch, strategy, method):
    """Training, evaluation and every method hook run three rounds without one tensor read
    (``item``, ``float(t)``, ``if t:``, ...); only the round's logging reads values back."""
    resolved = make_spec(
        method=method, federation={"rounds": 3}, engine={"strategy": strategy, "device": "cpu"}
    )
    fed = build_federation(resolved)
    watch = HostReadWatch(monkeypatch)
    for owner, names in HOT_PATH.items():
        target = getattr(fed, owner)
        for name in names:
            setattr(target, name, watch.hot(getattr(target, name)))
    records = [fed.run_round() for _ in range(3)]
    assert watch.reads == []
    assert all(r.acc_agg is not None for r in records)  # the rounds did run and log
