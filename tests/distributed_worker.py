"""What each process of a test's multi-process launch runs (importable: tests/ is on the path).

``run_jobs(jobs)`` runs, one after another, runs described as ``(raw_spec, run_dir, action,
stop_after)``: ``start`` a fresh run or ``resume`` one, and optionally stop after round
``stop_after`` as a crash would (every rank at the same round). Workers use one torch thread.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.spec.load import resolve


class Stop(Exception):
    pass


def run_jobs(jobs: list[tuple[dict, str, str, int | None]]) -> None:
    torch.set_num_threads(1)
    for raw, path, action, stop_after in jobs:
        if action == "start":
            session = RunSession.start(resolve(raw), Path(path))
        else:
            session = RunSession.resume(Path(path))
        callbacks = [session.on_round]
        if stop_after is not None:

            def stop(record, last=stop_after):
                if record.round == last:
                    raise Stop

            callbacks.append(stop)
        try:
            run(session.federation, on_round=callbacks)
        except Stop:
            continue
        session.finish()
