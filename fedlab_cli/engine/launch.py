"""``fedlab run --nproc N``: N local processes through torch's own launcher (torchrun's engine).

The workers are ``python -m fedlab_cli <the same arguments, less --nproc>`` started by
``torch.distributed.launcher.api.elastic_launch`` in standalone mode (a c10d rendezvous on a
free local port, no restarts), so a run launched here and one launched with ``torchrun
--standalone --nproc-per-node N -m fedlab_cli run …`` are the same thing. Each worker gets an
equal share of the CPU threads (``OMP_NUM_THREADS``): several torch processes each using every
core oversubscribe them badly. When a worker dies the launcher stops the others and this
process names the lost rank in one line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid

from fedlab_cli.errors import FedlabError


class WorkerFailedError(FedlabError):
    """A worker process of a multi-process run ended with an error or a signal."""

    exit_code = 1


class WorkerRefusedError(Exception):
    """The workers ended as a single process would have and rank 0 has said why: a refused
    input (exit code 2) or a clean stop on a signal (130, 143)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


SAID_BY_RANK_0 = {2, 128 + signal.SIGINT, 128 + signal.SIGTERM}
"""Exit codes whose reason rank 0 has printed already."""


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the workers must not launch again)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        out.append(item)
    return out


def launch(nproc: int, argv: list[str]) -> None:
    """Run ``fedlab <argv>`` in ``nproc`` local processes; raise one line on a worker's failure."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # this process speaks in one line
    threads = max(1, (os.cpu_count() or 1) // nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ["FEDLAB_THREADS"] = str(threads)
    try:
        elastic_run(nproc, sys.executable, "-m", "fedlab_cli", *strip_nproc(argv))
    except ChildFailedError as err:
        codes = {f.exitcode for f in err.failures.values()}
        if len(codes) == 1 and codes <= SAID_BY_RANK_0:
            raise WorkerRefusedError(codes.pop()) from None
        raise WorkerFailedError(describe_failures(err, nproc)) from None


def elastic_run(nproc: int, entry, *args):
    """``entry(*args)`` in ``nproc`` processes through torch's launcher, this process's signal
    handlers as they were afterwards (the launcher installs its own for SIGTERM and others and
    leaves them behind: a later stop request in the same process would go to them)."""
    from torch.distributed.launcher.api import elastic_launch

    kept = {sig: signal.getsignal(sig) for sig in HANDLED_BY_THE_LAUNCHER}
    try:
        return elastic_launch(standalone(nproc), entry)(*args)
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


HANDLED_BY_THE_LAUNCHER = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def standalone(nproc: int):
    """torchrun --standalone's configuration: one machine, a c10d rendezvous on a free local
    port, no restarts (a failed run resumes from its checkpoint instead)."""
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )


def describe_failures(err, nproc: int) -> str:
    """One line naming the rank that failed first (the others were stopped after it)."""
    failures = err.failures
    rank, failure = err.get_first_failure()
    code = failure.exitcode
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    others = sorted(r for r in failures if r != rank)
    also = f" (and rank {', '.join(map(str, others))})" if others else ""
    return (
        f"distributed: rank {rank} of {nproc} ended with {how}{also}; the other ranks were "
        "stopped — resume from the last checkpoint with `fedlab run --resume RUN_DIR`"
    )
