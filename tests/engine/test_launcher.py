"""Jobs resume what an earlier attempt left: the Slurm requeue path is ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import Crash, crash_after

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.launcher import Job, RequeuedJob, run_job, worker_threads
from fedlab_cli.engine.session import RunSession

SECTIONS = {
    "federation": {"rounds": 3},
    "training": {"local_epochs": 1},
    "output": {"checkpoint_every": 1},
}


def rounds(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["round"] for x in lines]


def test_a_requeued_job_resumes_its_preempted_run(make_spec, one_thread):
    pytest.importorskip("submitit")
    resolved = make_spec(**SECTIONS)
    path = Path(resolved.spec.output.dir)
    session = RunSession.start(resolved, path)
    with pytest.raises(Crash):  # preempted after round 1
        run(session.federation, on_round=[session.on_round, crash_after(1)])
    job = Job(str(path), resolved.to_dict())
    again = RequeuedJob().checkpoint(job)  # what submitit calls on preemption
    result = again.function(*again.args)
    assert result.error is None and result.summary["rounds"] == 3
    assert rounds(path) == [0, 1, 2]  # resumed from round 2, nothing twice


def test_a_finished_job_is_read_back_and_a_broken_one_is_one_line(make_spec, one_thread):
    resolved = make_spec(**SECTIONS)
    job = Job(str(resolved.spec.output.dir), resolved.to_dict())
    first = run_job(job)
    again = run_job(job)
    assert again.summary == first.summary  # read back, not retrained
    broken = run_job(Job(job.path + "-x", {**job.spec, "model": {"name": "nope"}}))
    assert broken.summary is None and "\n" not in broken.error and "model.name" in broken.error


def test_threads_are_split_between_workers(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert [worker_threads(n) for n in (1, 2, 3, 32)] == [16, 8, 5, 1]
