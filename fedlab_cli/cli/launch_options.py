"""The launcher options ``fedlab sweep`` and ``fedlab compare`` share, and their checks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import typer
from rich.console import Console

from fedlab_cli.cli.errors import fail
from fedlab_cli.engine.launcher import Job, JobResult, SlurmOptions, run_local, run_slurm

LAUNCHERS = ("local", "slurm")
CLUSTER_ENV = "FEDLAB_SUBMITIT_CLUSTER"
"""Tests set ``local`` to run the Slurm path through submitit's local executor."""

JOBS = typer.Option(1, "--jobs", min=1, help="Local runs at once (torch threads split).")
LAUNCHER = typer.Option("local", "--launcher", help="local, or slurm (a submitit job array).")
PARTITION = typer.Option(None, "--slurm-partition", help="Slurm partition of the job array.")
GPUS = typer.Option(0, "--gpus-per-job", min=0, help="Slurm: GPUs per array task.")
MAX_PARALLEL = typer.Option(None, "--max-parallel", min=1, help="Slurm: tasks running at once.")


def check_launcher(launcher: str) -> None:
    """An unknown launcher, or slurm without submitit: one line naming the fix."""
    if launcher not in LAUNCHERS:
        raise fail(f"--launcher: expected local or slurm (got {launcher!r})")
    if launcher == "slurm":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise fail(
                "--launcher slurm needs the 'submitit' package; install it with "
                "`pip install 'fedlab-cli[slurm]'`"
            ) from None


def slurm_options(partition: str | None, gpus: int, max_parallel: int | None) -> SlurmOptions:
    return SlurmOptions(
        partition=partition,
        gpus_per_job=gpus,
        max_parallel=max_parallel,
        cluster=os.environ.get(CLUSTER_ENV) or None,
    )


def launch(
    work: list[Job], launcher: str, jobs: int, slurm: SlurmOptions, folder: Path, console: Console
) -> Iterable[JobResult]:
    """Each job's result as it comes: here (one by one or ``jobs`` worker processes) or from
    a Slurm job array whose submitit files go to ``folder``."""
    if launcher == "slurm":
        return run_slurm(
            work,
            folder,
            slurm,
            lambda n: console.print(f"submitted a job array of {n} tasks", highlight=False),
        )
    return run_local(work, jobs)
