"""``fedlab run --nproc N``: the real command over processes, a lost rank, and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

SPEC = {
    "data": {"dataset": "digits", "num_clients": 4, "alpha": 0.5, "train_per_client": 20,
             "test_per_client": 20},
    "model": {"name": "small_cnn"},
    "federation": {"rounds": 40},
    "training": {"local_epochs": 1, "batch_size": 20, "lr": 0.05},
    "method": {"name": "fedavg"},
    "engine": {"device": "cpu", "strategy": "sequential", "collective_timeout": 20,
               "deterministic_reduce": True},
    "output": {"checkpoint_every": 2},
}  # fmt: skip


def fedlab(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fedlab_cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def rank_pid(marker: Path, rank: int) -> int | None:
    """The pid of the worker of ``rank`` whose command line names ``marker`` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(marker) in command and f"RANK={rank}".encode() in environ and "-m" in command:
            return int(entry.name)
    return None


def wait_for_rounds(run_dir: Path, rounds: int, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= rounds:
            return
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} never reached round {rounds}")


def test_a_lost_rank_ends_every_process_in_one_line_and_the_checkpoint_resumes(tmp_path):
    spec = tmp_path / "spec.yaml"
    run_dir = tmp_path / "run"
    spec.write_text(yaml.safe_dump({**SPEC, "output": {**SPEC["output"], "dir": str(run_dir)}}))
    parent = fedlab("run", str(spec), "--nproc", "2", "--quiet")
    wait_for_rounds(run_dir, 5)
    victim = rank_pid(spec, 1)
    assert victim is not None, "rank 1's worker not found"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = parent.communicate(timeout=90)
    assert time.monotonic() - killed_at < 60  # everyone stopped within the collective timeout
    assert parent.returncode == 1
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    # the launching process and rank 0 each end with one line, both naming the lost rank 1
    assert len(errors) == 2 and all("rank 1 of 2" in line for line in errors), stderr
    assert sum("rank 1 of 2 ended with signal SIGKILL" in line for line in errors) == 1
    assert rank_pid(spec, 0) is None  # rank 0 is gone too
    assert not (run_dir / "summary.json").exists()

    resumed = fedlab("run", "--resume", str(run_dir), "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out)
    assert summary["rounds"] == 40 and summary["processes"] == 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(40))


def test_nproc_gives_the_single_process_summary(tmp_path):
    spec = tmp_path / "spec.yaml"
    short = {**SPEC, "federation": {"rounds": 3}}
    spec.write_text(yaml.safe_dump(short))
    outputs = {}
    for n in (1, 2):
        target = tmp_path / f"run{n}"
        done = fedlab(
            "run", str(spec), "--nproc", str(n), "--json", "--set", f"output.dir={target}"
        )
        out, err = done.communicate(timeout=300)
        assert done.returncode == 0, err
        outputs[n] = json.loads(out)
        assert outputs[n]["run_dir"] == str(target)
    one, two = outputs[1], outputs[2]
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["final_acc_clients"] == one["final_acc_clients"]  # deterministic_reduce
    assert two["final_accuracy"] == one["final_accuracy"]


def test_a_refused_spec_is_one_line_from_rank_0_and_exit_2(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "data": {**SPEC["data"], "num_clients": 1}}))
    done = fedlab("run", str(spec), "--nproc", "2", "--set", f"output.dir={tmp_path / 'r'}")
    _, stderr = done.communicate(timeout=120)
    assert done.returncode == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.num_clients" in errors[0], stderr
