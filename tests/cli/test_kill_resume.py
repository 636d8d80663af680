"""kill -9 at random rounds, again and again: resuming always ends at the uninterrupted numbers.

Each attempt is a real ``fedlab`` command in its own process, killed with SIGKILL once the run
has logged a round drawn from a seeded schedule (mid-round, mid-write, mid-checkpoint: wherever
it happens to be). Processes come from a fork server that has imported fedlab once, so twenty
kills cost seconds, not minutes; each child uses one torch thread, as the reference run does.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

SPEC = {
    "data": {"dataset": "digits", "num_clients": 4, "alpha": 0.5, "train_per_client": 20,
             "test_per_client": 20},
    "model": {"name": "small_cnn"},
    "federation": {"rounds": 24},
    "training": {"local_epochs": 1, "batch_size": 10, "lr": 0.05},
    "method": {"name": "lips", "interval": 3, "sparsity": "persistent"},
    "engine": {"device": "cpu"},
    "output": {"checkpoint_every": 1, "keep_checkpoints": 2},
}  # fmt: skip


def fedlab_main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    from fedlab_cli.cli import app

    app(argv)


@pytest.fixture(scope="module")
def fork() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "fedlab_cli.cli", "fedlab_cli.engine.session"])
    return context


def logged_rounds(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def kill_when(process, reached, limit: float = 60) -> bool:
    """SIGKILL ``process`` once ``reached()``; False if it finished first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not process.is_alive():
            return False
        if reached():
            os.kill(process.pid, signal.SIGKILL)
            process.join()
            return True
        time.sleep(0.01)
    raise AssertionError("the run made no progress")


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


def reference(tmp_path: Path, spec: dict, argv_of) -> Path:
    target = tmp_path / "uninterrupted"
    before = torch.get_num_threads()
    try:
        fedlab_main(argv_of(target, fresh=True))
    except SystemExit as done:
        assert done.code in (0, None)
    finally:
        torch.set_num_threads(before)
    return target


def test_twenty_kills_of_a_run_then_resume_give_the_uninterrupted_numbers(tmp_path, fork):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))

    def argv_of(target: Path, fresh: bool) -> list[str]:
        if fresh:
            return ["run", str(spec), "--quiet", "--set", f"output.dir={target}"]
        return ["run", "--resume", str(target), "--quiet"]

    schedule = sorted(random.Random(11).sample(range(1, 23), 20))  # rounds logged when killed
    run_dir = tmp_path / "killed"
    kills = 0
    for target in schedule:
        fresh = not (run_dir / "spec.yaml").is_file()
        child = fork.Process(target=fedlab_main, args=(argv_of(run_dir, fresh),))
        child.start()
        if kill_when(child, lambda t=target: logged_rounds(run_dir) >= t):
            kills += 1
    assert kills >= 15  # most attempts were killed mid-run
    final = fork.Process(target=fedlab_main, args=(argv_of(run_dir, False),))
    final.start()
    final.join(timeout=120)
    assert final.exitcode == 0
    uninterrupted = reference(tmp_path, SPEC, argv_of)
    assert records(run_dir) == records(uninterrupted)
    done, want = (json.loads((d / "summary.json").read_text()) for d in (run_dir, uninterrupted))
    for key in ("final_accuracy", "final_acc_clients", "mean_density", "train_flops_rel"):
        assert done[key] == want[key], key


def test_kills_of_a_compare_then_rerun_give_the_same_table(tmp_path, fork):
    preset = tmp_path / "preset.yaml"
    short = {**SPEC, "federation": {"rounds": 4}, "method": {"name": "fedbn"}}
    preset.write_text(yaml.safe_dump(short))

    def argv_of(target: Path, fresh: bool = False) -> list[str]:
        return ["compare", "fedbn", "lips", "--preset", str(preset), "--seeds", "0,1",
                "--out", str(target), "--quiet"]  # fmt: skip

    out = tmp_path / "killed"
    progress = random.Random(5)
    for _ in range(8):  # kill it at a random point of its 4 runs x 4 rounds
        child = fork.Process(target=fedlab_main, args=(argv_of(out),))
        child.start()
        wait = progress.uniform(0.5, 4.0)
        started = time.monotonic()
        kill_when(child, lambda s=started, w=wait: time.monotonic() - s > w)
    final = fork.Process(target=fedlab_main, args=(argv_of(out),))
    final.start()
    final.join(timeout=300)
    assert final.exitcode == 0
    uninterrupted = reference(tmp_path, short, argv_of)
    for method in ("fedbn", "lips"):
        for seed in (0, 1):
            run = Path(method) / f"seed{seed}"
            assert records(out / run) == records(uninterrupted / run), run
    tables = [json.loads((d / "summary.json").read_text())["methods"] for d in (out, uninterrupted)]
    for row in (*tables[0], *tables[1]):
        row.pop("wall_mean")  # wall time is the one number that is not the run's own
    assert tables[0] == tables[1]
