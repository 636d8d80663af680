"""Throughput of one run over 1, 2, … processes (``fedlab run --nproc N``), side by side.

    python benchmarks/scaleout.py PRESET [--processes 1,2] [--rounds 4] [--clients N]
        [--threads 1] [--set key=value ...] [--repeats 1] [--json]

Each process count runs the same shortened preset as its own ``fedlab run --nproc N`` (every
process with ``--threads`` torch threads, so the comparison is of processes, not of threads),
and the round times come from the run's ``metrics.jsonl``: the median round after the first
(which includes warm-up) gives seconds per round, training samples per second and the speed-up
against the first process count. On a GPU machine each process takes one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def run_once(preset: str, processes: int, overrides: list[str], threads: int) -> dict:
    """One ``fedlab run --nproc``; its per-round seconds and work from the run dir."""
    with tempfile.TemporaryDirectory(prefix="fedlab-scaleout-") as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "fedlab_cli", "run", preset, "--quiet"]
        command += ["--nproc", str(processes)] if processes > 1 else []
        for item in [*overrides, f"output.dir={out}", "output.checkpoint_every=1000"]:
            command += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FEDLAB_THREADS": str(threads)}
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"error: {processes} processes failed: {done.stderr.strip()[-300:]}")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        spec = yaml.safe_load((out / "spec.yaml").read_text())
    steady = [r["seconds"] for r in records[1:]] or [records[0]["seconds"]]
    per_round = statistics.median(steady)
    samples = spec["data"]["train_per_client"] or 0
    train = records[-1]["participants"] * samples * spec["training"]["local_epochs"]
    return {"seconds_per_round": per_round, "train_samples_per_s": train / per_round, "wall": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    overrides = [f"federation.rounds={args.rounds}", *args.overrides]
    if args.clients:
        overrides.append(f"data.num_clients={args.clients}")
    counts = [int(p) for p in args.processes.split(",")]
    results: dict[int, list[dict]] = {n: [] for n in counts}
    for repeat in range(args.repeats):
        for n in counts:  # interleaved, so drifting machine load hits every count alike
            result = run_once(args.preset, n, overrides, args.threads)
            results[n].append(result)
            print(
                f"repeat {repeat + 1}: {n} process(es): {result['seconds_per_round']:.3f} s/round, "
                f"{result['train_samples_per_s']:.0f} train samples/s",
                flush=True,
            )
    base = statistics.median(r["seconds_per_round"] for r in results[counts[0]])
    summary = {}
    for n in counts:
        seconds = statistics.median(r["seconds_per_round"] for r in results[n])
        speedup = base / seconds
        summary[n] = {"seconds_per_round": seconds, "speedup": speedup}
        print(
            f"{n} process(es) x {args.threads} thread(s): {seconds:.3f} s/round (median), "
            f"speed-up vs {counts[0]}: {speedup:.2f}x"
        )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
