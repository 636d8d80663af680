"""Bring runs to completion: here one after another, in local worker processes, or as a Slurm
job array through ``submitit``. A job is a run dir and its resolved spec; running it starts the
run, resumes it (spec.yaml present, e.g. after a kill or a Slurm preemption) or reads back its
summary (complete), so every launcher can be interrupted and rerun.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlab_cli.engine.rundir import SPEC, RunDir
from fedlab_cli.errors import TrainingDivergedError


@dataclass(frozen=True)
class Job:
    """What a worker needs (picklable): where the run goes and its resolved spec."""

    path: str
    spec: dict[str, Any]
    fresh: bool = False  # remove what a failed attempt left and start again


@dataclass(frozen=True)
class JobResult:
    path: str
    summary: dict | None
    error: str | None
    init_sha256: str | None = None  # the initial weights of a run started by this job


def run_job(job: Job) -> JobResult:
    """Start, resume or read back one run; any failure is returned as one line, so one bad
    run never stops the others."""
    from fedlab_cli.engine.federation import run
    from fedlab_cli.engine.session import RunSession
    from fedlab_cli.spec.load import resolve

    path = Path(job.path)
    try:
        run_dir = RunDir(path)
        if job.fresh or not (path / SPEC).is_file():
            shutil.rmtree(path, ignore_errors=True)  # our own dir: leftovers of a killed start
        elif run_dir.is_complete:
            return JobResult(job.path, run_dir.summary(), None)
        initial = None
        if (path / SPEC).is_file():
            session = RunSession.resume(path)
        else:
            session = RunSession.start(resolve(job.spec), path)
            initial = session.federation.initial_weights_sha256()
        try:
            run(session.federation, on_round=[session.on_round])
        except TrainingDivergedError as err:  # a result: summary.json says status diverged
            return JobResult(job.path, session.finish(diverged=str(err)), None, initial)
        except Exception:
            session.close_loggers()
            raise
        summary = session.finish()
        return JobResult(job.path, summary, None, initial)
    except Exception as err:
        return JobResult(job.path, None, " ".join(f"{type(err).__name__}: {err}".split())[:300])


def worker_threads(jobs: int) -> int:
    """Each of ``jobs`` workers' share of this process's torch threads."""
    import torch

    return max(1, torch.get_num_threads() // jobs)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where the platform has it (torch's state is never forked), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_local(jobs: list[Job], parallel: int = 1) -> Iterator[JobResult]:
    """Each job's result as it finishes: in this process when ``parallel`` is 1, else in
    ``parallel`` worker processes with the torch threads split between them."""
    if parallel <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run_job(job)
        return
    context = _context()
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["torch", "fedlab_cli.engine.session"])
    threads = worker_threads(parallel)
    with ProcessPoolExecutor(
        max_workers=min(parallel, len(jobs)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 0
    max_parallel: int | None = None
    timeout_min: int = 24 * 60
    cpus_per_job: int | None = None
    cluster: str | None = None  # submitit's: None = slurm; "local" runs jobs as local processes


class RequeuedJob:
    """A submitit callable that, when Slurm preempts or times out the job, asks to be run again
    with the same job: rerunning a job resumes its run dir, i.e. ``--resume``."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def __call__(self, job: Job) -> JobResult:
        if self.threads:
            _init_worker(self.threads)
        return run_job(job)

    def checkpoint(self, job: Job) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(RequeuedJob(self.threads), job)


def run_slurm(
    jobs: list[Job], folder: Path, options: SlurmOptions, started: Callable[[int], None] | None
) -> Iterable[JobResult]:
    """A job array (one task per run, at most ``max_parallel`` at once); waits for them."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster or "slurm")
    parameters: dict[str, Any] = {"timeout_min": options.timeout_min, "name": "fedlab-sweep"}
    if options.gpus_per_job:
        parameters["gpus_per_node"] = options.gpus_per_job
    if options.cpus_per_job:
        parameters["cpus_per_task"] = options.cpus_per_job
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.max_parallel:
        parameters["slurm_array_parallelism"] = options.max_parallel
    executor.update_parameters(**parameters)
    threads = options.cpus_per_job or (1 if options.cluster == "local" else None)
    submitted = executor.map_array(RequeuedJob(threads), jobs)
    if started is not None:
        started(len(submitted))
    for job, handle in zip(jobs, submitted, strict=True):
        try:
            yield handle.result()
        except Exception as err:  # the Slurm job itself failed (killed, out of memory)
            yield JobResult(job.path, None, " ".join(f"{type(err).__name__}: {err}".split())[:300])
