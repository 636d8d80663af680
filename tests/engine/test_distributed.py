"""One run over several processes (gloo on CPU) gives the numbers of one process.

Each test launches its processes once, through torch's own launcher (as ``fedlab run --nproc``
does), and has them run a list of runs (``tests/distributed_worker.py``); the same runs in
this single process are the reference.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import small_raw_spec
from distributed_worker import Stop, run_jobs
from support import one_torch_thread, strip_time

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.launch import elastic_run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.spec.load import resolve

PRESET_LIKE = {  # the quickstart, shortened
    "data": {"num_clients": 6, "alpha": 0.1, "train_per_client": 20, "test_per_client": 30},
    "federation": {"rounds": 3},
    "training": {"local_epochs": 2, "batch_size": 20, "lr": 0.05, "momentum": 0.9},
}
METHODS = {
    "separate": {"name": "separate"},
    "fedavg": {"name": "fedavg"},
    "fedbn": {"name": "fedbn"},
    "fedrep": {"name": "fedrep"},
    "pfedsd": {"name": "pfedsd"},
    "fedcac": {"name": "fedcac"},
    "fedprox": {"name": "fedprox", "mu": 0.1},
    "lips": {"name": "lips", "interval": 2},
    "ssfl": {"name": "ssfl", "density": 0.3},
    "lips-persistent-random": {
        "name": "lips",
        "interval": 2,
        "sparsity": "persistent",
        "score": "random",
    },
    "fedpm": {"name": "fedpm", "prior_reset_every": 2, "weighting": "samples"},
}
SECTIONS = {  # what a method needs beside its own keys (FedPM: a model without BatchNorm, Adam)
    "fedpm": {
        "model": {"name": "conv2_tiny"},
        "training": {"optimizer": "adam", "lr": 0.1, "optimizer_state": "keep"},
        "eval": {"global": True},
    },
}


def launch(processes: int, jobs: list) -> None:
    """The processes ``fedlab run --nproc`` would start, each running ``jobs``; this process's
    signal handlers stay as they were (torch's launcher would leave its own behind)."""
    before = signal.getsignal(signal.SIGTERM)
    elastic_run(processes, run_jobs, jobs)
    assert signal.getsignal(signal.SIGTERM) is before


def raw_spec(path: Path, method: dict, deterministic: bool, **sections) -> dict:
    raw = small_raw_spec(path, method=method, **PRESET_LIKE)
    raw["engine"] = {"deterministic_reduce": deterministic, "collective_timeout": 60}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def single_process(raw: dict, path: Path) -> list[dict]:
    with one_torch_thread():
        session = RunSession.start(resolve(raw), path)
        run(session.federation, on_round=[session.on_round])
        session.finish()
    return strip_time(session.run_dir.metrics())


def metrics(path: Path) -> list[dict]:
    return strip_time(
        [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    )


def test_two_processes_give_the_numbers_of_one(tmp_path):
    """Every built-in method: bitwise equal with deterministic_reduce, and within float
    tolerance with the one all_reduce per round."""
    jobs, expected = [], {}
    for name, method in METHODS.items():
        for deterministic in (True, False):
            key = f"{name}-{'det' if deterministic else 'sum'}"
            sections = SECTIONS.get(name, {})
            raw = raw_spec(tmp_path / "two" / key, method, deterministic, **sections)
            jobs.append((raw, str(tmp_path / "two" / key), "start", None))
            if deterministic:
                one = raw_spec(tmp_path / "one" / name, method, True, **sections)
                expected[name] = single_process(one, tmp_path / "one" / name)
    launch(2, jobs)
    for name in METHODS:
        assert metrics(tmp_path / "two" / f"{name}-det") == expected[name], name
        approximate = metrics(tmp_path / "two" / f"{name}-sum")
        for got, want in zip(approximate, expected[name], strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), name
            assert got["acc_agg"] == pytest.approx(want["acc_agg"], abs=2.0), name
        summary = json.loads((tmp_path / "two" / f"{name}-det" / "summary.json").read_text())
        assert summary["processes"] == 2


def test_resume_across_world_sizes_and_a_rank_without_participants(tmp_path):
    """5 clients on 2 ranks (3 + 2), 1 participant a round, so some rounds leave a rank idle;
    a 2-process checkpoint resumed by 1 process and a 1-process one by 2 both end where an
    uninterrupted single-process run ends."""
    method = {"name": "lips", "interval": 2, "sparsity": "persistent"}
    extra = {
        "data": {"num_clients": 5},
        "federation": {"rounds": 5, "participation": 0.2},
        "output": {"checkpoint_every": 2, "keep_checkpoints": 0},
    }
    raw = raw_spec(tmp_path / "whole", method, True, **extra)
    whole = single_process(raw, tmp_path / "whole")
    owners = [line["acc_local_clients"] for line in whole]  # all 5 clients are evaluated
    assert all(len(accuracies) == 5 for accuracies in owners)

    two_then_one = tmp_path / "two-then-one"
    launch(2, [(raw_spec(two_then_one, method, True, **extra), str(two_then_one), "start", 2)])
    assert len(metrics(two_then_one)) == 3 and not (two_then_one / "summary.json").exists()
    torch.set_num_threads(1)
    resumed = RunSession.resume(two_then_one)
    assert resumed.federation.next_round == 2  # the last checkpoint: after round 1
    run(resumed.federation, on_round=[resumed.on_round])
    resumed.finish()
    assert metrics(two_then_one) == whole

    one_then_two = tmp_path / "one-then-two"
    session = RunSession.start(resolve(raw_spec(one_then_two, method, True, **extra)), one_then_two)

    def stop(record):
        if record.round == 2:
            raise Stop

    with pytest.raises(Stop):
        run(session.federation, on_round=[session.on_round, stop])
    launch(2, [(None, str(one_then_two), "resume", None)])
    assert metrics(one_then_two) == whole
    participants_by_round = [line["participants"] for line in whole]
    assert participants_by_round == [1] * 5
