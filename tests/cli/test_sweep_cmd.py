"""``fedlab sweep``: a grid x seeds, the same numbers in worker processes as one by one,
finished runs kept across a kill, failed runs recorded, bad input refused in one line."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from support import assert_events_equal_metrics, assert_one_line_refusal, one_torch_thread
from typer.testing import CliRunner

from fedlab_cli.cli import app

TINY = [
    "--rounds", "1", "--clients", "4",
    "--set", "training.local_epochs=1", "--set", "data.train_per_client=20",
    "--set", "data.test_per_client=20",
]  # fmt: skip
GRID = ["--grid", "method.name=fedavg,fedbn", "--grid", "data.alpha=0.1,0.5", "--seeds", "0,1"]


def sweep(out: Path, *argv: str) -> CliRunner:
    with one_torch_thread():
        result = CliRunner().invoke(app, ["sweep", "quickstart", "--out", str(out), *argv])
    return result


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "one-by-one"
    result = sweep(out, *GRID, *TINY, "--jobs", "1")
    assert result.exit_code == 0, result.output
    return out


def test_two_jobs_give_the_numbers_of_one_by_one(sequential, tmp_path):
    out = tmp_path / "parallel"
    result = sweep(out, *GRID, *TINY, "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert "8 to start" in result.stderr and "2 at once" in result.stderr
    runs = sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith("."))
    assert runs == sorted(p.name for p in (sequential / "runs").iterdir() if p.is_dir())
    assert len(runs) == 8  # 2 x 2 grid x 2 seeds, one dir per resolved spec
    for name in runs:
        assert metrics(out / "runs" / name) == metrics(sequential / "runs" / name), name
    table = json.loads((out / "summary.json").read_text())
    rows = {row["method"]: row["final_mean"] for row in table["methods"]}
    assert len(rows) == 4 and "name=fedbn, alpha=0.5" in rows
    index = json.loads((out / "sweep.json").read_text())["runs"]
    for row_label, mean in rows.items():  # the table's means are the runs' own finals
        dirs = [r["dir"] for r in index if r["label"] == row_label]
        finals = [json.loads((out / d / "summary.json").read_text()) for d in dirs]
        assert mean == pytest.approx(sum(f["final_accuracy"] for f in finals) / 2, abs=1e-12)


def test_a_sweep_run_equals_the_same_fedlab_run(sequential, tmp_path):
    index = json.loads((sequential / "sweep.json").read_text())["runs"]
    entry = next(r for r in index if r["label"] == "name=fedbn, alpha=0.5" and r["seed"] == 1)
    alone = tmp_path / "alone"
    argv = ["run", "quickstart", "--set", f"output.dir={alone}", "--set", "method.name=fedbn"]
    argv += ["--set", "data.alpha=0.5", "--set", "seed=1", "--set", "federation.rounds=1"]
    argv += ["--set", "data.num_clients=4", *(x for x in TINY[4:]), "-q"]
    with one_torch_thread():
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert metrics(alone) == metrics(sequential / entry["dir"])


def test_plot_draws_a_band_per_grid_point(sequential):
    import numpy as np

    from fedlab_cli.report.curves import curves

    series = {s.label: s for s in curves([sequential], "acc_agg")}
    assert len(series) == 4
    index = json.loads((sequential / "sweep.json").read_text())["runs"]
    for label, s in series.items():
        runs = [sequential / r["dir"] for r in index if r["label"] == label]
        acc = np.array([[r["acc_agg"] for r in metrics(run)] for run in runs])
        np.testing.assert_allclose(s.mean, acc.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(s.std, acc.std(axis=0, ddof=1), rtol=0, atol=1e-12)


def stamps(out: Path) -> dict[str, int]:
    """When each finished run wrote its summary.json."""
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}


def test_rerun_reuses_every_finished_run(sequential):
    before = stamps(sequential)
    result = sweep(sequential, *GRID, *TINY)
    assert result.exit_code == 0, result.output
    assert "8 done, 0 to resume, 0 to start" in result.stderr
    assert stamps(sequential) == before and len(before) == 8


def _sweep_main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    from fedlab_cli.cli import app

    app(argv)


def test_kill_then_rerun_redoes_only_unfinished_runs(tmp_path):
    out = tmp_path / "killed"
    argv = ["sweep", "quickstart", "--out", str(out), "--grid", "method.name=fedavg,fedbn"]
    argv += ["--seeds", "0,1", *TINY, "--set", "federation.rounds=3"]
    argv += ["--set", "output.checkpoint_every=1"]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard:  # a SIGKILL mid-run, then resume: no TensorBoard step twice
        argv += ["--set", "output.loggers=[tensorboard]"]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "fedlab_cli.cli"])
    child = context.Process(target=_sweep_main, args=([*argv, "-q"],))
    child.start()
    deadline = time.monotonic() + 60
    done: list[Path] = []
    while time.monotonic() < deadline and child.is_alive():
        done = list(out.glob("runs/*/summary.json"))
        if len(done) >= 2:
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    child.join()
    assert child.exitcode == -signal.SIGKILL, "the sweep finished before it was killed"
    finished = stamps(out)
    assert 2 <= len(finished) < 4
    result = sweep(out, *argv[4:])
    assert result.exit_code == 0, result.output
    assert f"{len(finished)} done" in result.stderr
    for name, stamp in finished.items():  # not redone
        assert (out / "runs" / name / "summary.json").stat().st_mtime_ns == stamp
    assert len(list(out.glob("runs/*/summary.json"))) == 4
    for run in out.glob("runs/*/"):
        assert [r["round"] for r in metrics(run)] == [0, 1, 2]  # resumed: no round twice
        if tensorboard:
            assert_events_equal_metrics(run)


def test_a_failed_run_is_recorded_and_retried_only_when_asked(tmp_path):
    out = tmp_path / "failing"
    argv = ["--grid", "model.init=null,/no/such/weights.pt", "--seeds", "0", *TINY]
    first = sweep(out, *argv)
    assert first.exit_code == 1
    assert "1 of 2 runs failed" in first.stderr and "--retry-failed" in first.stderr
    failures = json.loads((out / "failures.json").read_text())
    (entry,) = failures.values()
    assert entry["label"] == "init=/no/such/weights.pt" and "weights.pt" in entry["error"]
    again = sweep(out, *argv)
    assert "1 done, 0 to resume, 0 to start, 1 failed before" in again.stderr
    retried = sweep(out, *argv, "--retry-failed")
    assert "1 to start" in retried.stderr and retried.exit_code == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--grid", "data.alpha"], "--grid: expected key=v1,v2"),
        (["--grid", "data.alpha="], "--grid data.alpha: expected comma-separated values"),
        (["--grid", "seed=1,2"], "--grid seed: a sweep sets it from --seeds"),
        (["--grid", "data.alpha=0.1,0.1"], "given twice"),
        (["--grid", "data.nope=1,2"], "data.nope: unknown key"),
        (["--grid", "data.alpha=0.1,-3"], "data.alpha"),
        (["--launcher", "pbs"], "--launcher"),
        (["--set", "seed=3"], "--set seed: a sweep sets it from --seeds"),
        (["--seeds", "a"], "--seeds"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, argv, fragment):
    out = tmp_path / "bad"
    result = sweep(out, *argv, *TINY)
    assert_one_line_refusal(result, fragment)
    assert not out.exists()


def test_slurm_launch_through_submitits_local_executor(sequential, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("FEDLAB_SUBMITIT_CLUSTER", "local")
    out = tmp_path / "slurm"
    argv = ["--grid", "method.name=fedbn", "--grid", "data.alpha=0.5", "--seeds", "1", *TINY]
    result = sweep(out, *argv, "--launcher", "slurm", "--max-parallel", "2")
    assert result.exit_code == 0, result.output
    assert "submitted a job array of 1 tasks" in result.stderr
    runs = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    for run in runs:  # the same spec hash and the same numbers as the local one-by-one runs
        assert metrics(run) == metrics(sequential / "runs" / run.name)
    assert list((out / "slurm").glob("*_result.pkl"))  # submitit's own record of each task
