"""TensorBoard event files read back with tensorboard's own reader equal metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import Crash, crash_after

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.rundir import RunDir
from fedlab_cli.engine.session import RunSession

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

SECTIONS = {
    "federation": {"rounds": 4},
    "training": {"local_epochs": 1},
    "inertia": {"ref_rounds": [0]},
    "output": {"loggers": ["tensorboard", "csv"], "checkpoint_every": 2},
}


def read_events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_events_equal_metrics(run_dir: Path) -> None:
    events = read_events(run_dir)
    records = jsonl(run_dir)
    tags = set(events.Tags()["scalars"])
    for key in ("loss", "acc_local", "acc_agg", "uplink_bits", "downlink_bits"):
        assert key in tags, key
        found = events.Scalars(key)
        steps = [e.step for e in found]
        assert steps == [r["round"] for r in records], (key, steps)  # each round exactly once
        # TensorBoard stores float32: equal to the jsonl value rounded to float32, bit for bit
        assert [np.float32(e.value) for e in found] == [np.float32(r[key]) for r in records]
    layer_tags = [t for t in tags if t.startswith("inertia/rel_update/")]
    assert layer_tags, tags
    rows = RunDir(run_dir).inertia_rows()
    for tag in layer_tags:
        layer = tag.split("/", 2)[2]
        want = [float(r["rel_update"]) for r in rows if r["layer"] == layer]
        got = [e.value for e in events.Scalars(tag)]
        assert [e.step for e in events.Scalars(tag)] == list(range(len(records)))
        assert got == pytest.approx(want, rel=1e-6)


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


def _fedlab(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    from fedlab_cli.cli import app

    app(argv)


def test_sigkill_then_cli_resume_gives_each_round_once(tmp_path):
    import multiprocessing
    import os
    import signal
    import time

    from typer.testing import CliRunner

    from fedlab_cli.cli import app

    out = tmp_path / "killed"
    argv = ["run", "quickstart", "-q", "--set", f"output.dir={out}"]
    for item in ("federation.rounds=6", "data.num_clients=4", "training.local_epochs=1",
                 "output.checkpoint_every=2", "output.loggers=[tensorboard]"):  # fmt: skip
        argv += ["--set", item]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "fedlab_cli.cli"])
    child = context.Process(target=_fedlab, args=(argv,))
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.is_alive():
        log = out / "metrics.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            os.kill(child.pid, signal.SIGKILL)  # wherever it is: mid-round, mid-write
            break
        time.sleep(0.01)
    child.join()
    assert child.exitcode == -signal.SIGKILL, "the run finished before it was killed"
    result = CliRunner().invoke(app, ["run", "--resume", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert [r["round"] for r in jsonl(out)] == list(range(6))
    assert_events_equal_metrics(out)
