"""How much the inertia recorder costs: the quickstart with and without it, in one process.

Usage: ``.venv/bin/python benchmarks/inertia_overhead.py [--reps 3] [--rounds 40]``

Two measurements, because the A/B difference of whole runs drowns in noise on a shared machine:

- A/B: median wall time of whole runs with the recorder (and its ``inertia.csv`` writes) and
  without, interleaved so that load changes hit both alike;
- direct: the time spent inside the recorder and the CSV appends, summed over each run, as a
  share of that run's wall time (median over the runs with the recorder).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fedlab_cli.cli.presets import find_spec
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.spec.load import load_spec


def one_run(out: Path, rounds: int, record: bool) -> tuple[float, float]:
    """Wall seconds of the rounds, and seconds spent recording inertia (0 without)."""
    resolved = load_spec(find_spec("quickstart"), [f"federation.rounds={rounds}"])
    session = RunSession.start(resolved, out)
    fed, recorder = session.federation, session.inertia
    spent = [0.0]
    if record:
        observe, append = recorder.on_aggregated, session.run_dir.append_inertia

        def timed_observe(*args):
            start = time.perf_counter()
            observe(*args)
            spent[0] += time.perf_counter() - start

        def timed_append(rows):
            start = time.perf_counter()
            append(rows)
            spent[0] += time.perf_counter() - start

        recorder.on_aggregated = timed_observe
        session.run_dir.append_inertia = timed_append
    else:
        fed.observers.remove(recorder)
        session.inertia = None
    start = time.perf_counter()
    run(fed, on_round=[session.on_round])
    return time.perf_counter() - start, spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    walls: dict[bool, list[float]] = {True: [], False: []}
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp) / "warmup", 2, True)
        for rep in range(args.reps):
            for record in (True, False) if rep % 2 == 0 else (False, True):
                wall, spent = one_run(Path(tmp) / f"{rep}-{record}", args.rounds, record)
                walls[record].append(wall)
                if record:
                    shares.append(spent / wall)
                print(f"rep {rep} recorder={'on ' if record else 'off'} wall {wall:7.2f} s"
                      + (f"  recording {spent * 1000:7.1f} ms ({100 * spent / wall:.2f}%)"
                         if record else ""), flush=True)  # fmt: skip
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print(f"median wall, {args.rounds} rounds: with {on:.2f} s, without {off:.2f} s, "
          f"ratio {on / off:.3f} ({100 * (on / off - 1):+.1f}%)")  # fmt: skip
    print(f"direct: recording takes {100 * statistics.median(shares):.2f}% of the run's wall time")


if __name__ == "__main__":
    main()
