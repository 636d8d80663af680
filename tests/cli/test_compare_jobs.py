"""``fedlab compare --jobs 2``: a sweep over methods in worker processes, the same table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from support import assert_one_line_refusal, one_torch_thread
from typer.testing import CliRunner

from fedlab_cli.cli import app

ARGS = ["fedavg", "fedbn", "--preset", "quickstart", "--seeds", "0,1", "--rounds", "1"]
ARGS += ["--clients", "4", "--set", "training.local_epochs=1", "--set", "data.train_per_client=20"]
ARGS += ["--set", "data.test_per_client=20"]


def compare(out: Path, *extra: str):
    with one_torch_thread():
        return CliRunner().invoke(app, ["compare", *ARGS, "--out", str(out), *extra])


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as handle:
        found = list(csv.DictReader(handle))
    return [{k: v for k, v in r.items() if k not in ("wall_seconds", "run_dir")} for r in found]


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


def test_two_jobs_give_the_runs_and_table_of_one_by_one(tmp_path):
    parallel, sequential = tmp_path / "parallel", tmp_path / "sequential"
    first = compare(parallel, "--jobs", "2")
    assert first.exit_code == 0, first.output
    second = compare(sequential)
    assert second.exit_code == 0, second.output
    assert rows(parallel) == rows(sequential)  # finals, best, fingerprints of every run
    assert all(r["init_sha256"] for r in rows(parallel))
    for run in parallel.glob("*/seed*"):
        assert metrics(run) == metrics(sequential / run.parent.name / run.name)
    fingerprints = json.loads((parallel / "fingerprints.json").read_text())
    assert fingerprints == json.loads((sequential / "fingerprints.json").read_text())


def test_bad_launcher_is_one_line(tmp_path):
    result = compare(tmp_path / "x", "--launcher", "mpi")
    assert_one_line_refusal(result, "--launcher")
    assert not (tmp_path / "x").exists()
