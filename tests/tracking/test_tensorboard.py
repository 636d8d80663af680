"""TensorBoard event files read back with tensorboard's own reader equal metrics.jsonl.

A real SIGKILL and resume with TensorBoard on: tests/cli/test_sweep_cmd.py (the killed sweep)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support import Crash, assert_events_equal_metrics, crash_after, read_events

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession

pytest.importorskip("tensorboard")

SECTIONS = {
    "federation": {"rounds": 4},
    "training": {"local_epochs": 1},
    "inertia": {"ref_rounds": [0]},
    "output": {"loggers": ["tensorboard", "csv"], "checkpoint_every": 2},
}


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_event_files_hold_every_round_of_metrics_jsonl(make_spec, one_thread):
    resolved = make_spec(**SECTIONS)
    session = RunSession.start(resolved, resolved.spec.output.dir)
    run(session.federation, on_round=[session.on_round])
    session.finish()
    run_dir = Path(resolved.spec.output.dir)
    assert_events_equal_metrics(run_dir)
    assert "cos_ref@0" in "".join(read_events(run_dir).Tags()["scalars"])
    hparams = read_events(run_dir).summary_metadata
    assert any("hparams" in m.plugin_data.plugin_name for m in hparams.values())


def test_resume_after_a_kill_writes_no_step_twice(make_spec, one_thread):
    resolved = make_spec(**SECTIONS)
    run_dir = Path(resolved.spec.output.dir)
    session = RunSession.start(resolved, run_dir)
    with pytest.raises(Crash):  # killed after round 2 was logged; last checkpoint: round 1
        run(session.federation, on_round=[session.on_round, crash_after(2)])
    assert [e.step for e in read_events(run_dir).Scalars("acc_agg")] == [0, 1, 2]
    resumed = RunSession.resume(run_dir)
    assert resumed.federation.next_round == 2  # round 2 is redone
    run(resumed.federation, on_round=[resumed.on_round])
    resumed.finish()
    assert_events_equal_metrics(run_dir)
    assert [r["round"] for r in jsonl(run_dir)] == [0, 1, 2, 3]


def test_csv_equals_metrics_jsonl_after_resume(make_spec, one_thread):
    import csv

    resolved = make_spec(**SECTIONS)
    run_dir = Path(resolved.spec.output.dir)
    session = RunSession.start(resolved, run_dir)
    with pytest.raises(Crash):
        run(session.federation, on_round=[session.on_round, crash_after(2)])
    resumed = RunSession.resume(run_dir)
    run(resumed.federation, on_round=[resumed.on_round])
    resumed.finish()
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    records = jsonl(run_dir)
    assert [int(r["round"]) for r in rows] == [r["round"] for r in records]
    for row, record in zip(rows, records, strict=True):
        for key in ("loss", "acc_agg", "uplink_bits"):
            assert float(row[key]) == record[key]  # full precision, not rounded
        assert not any(k.endswith("_clients") for k in row)  # lists are left out
    assert all(math.isfinite(float(r["loss"])) for r in rows)
