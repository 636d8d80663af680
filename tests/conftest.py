"""Shared fixtures: a small, fast run spec on the offline digits data."""

from pathlib import Path

import pytest
from support import one_torch_thread

from fedlab_cli.spec.load import apply_overrides, resolve


def small_raw_spec(out: Path, **sections) -> dict:
    raw = {
        "data": {
            "dataset": "digits",
            "num_clients": 4,
            "alpha": 0.5,
            "train_per_client": 30,
            "test_per_client": 20,
        },
        "model": {"name": "small_cnn"},
        "federation": {"rounds": 3},
        "training": {"local_epochs": 2, "batch_size": 16, "lr": 0.05},
        "method": {"name": "fedavg"},
        "seed": 0,
        "output": {"dir": str(out)},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


@pytest.fixture
def make_spec(tmp_path):
    """``make_spec(method=..., data={...}, overrides=[...])`` -> a ResolvedSpec under tmp_path."""

    def make(overrides: list[str] | None = None, **sections):
        raw = small_raw_spec(tmp_path / "run", **sections)
        return resolve(apply_overrides(raw, overrides or []))

    return make


@pytest.fixture
def one_thread():
    """The test runs torch on one thread (golden and recorded numbers were made so)."""
    with one_torch_thread():
        yield


def pytest_configure(config):
    """Under pytest-xdist each worker process trains on one thread: two workers on two cores
    would otherwise oversubscribe them (ten times slower)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
