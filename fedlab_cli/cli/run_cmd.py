"""``fedlab run``: one federated run from a spec into a run directory."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from fedlab_cli.cli import worker
from fedlab_cli.cli.boundary import report_crashes_in
from fedlab_cli.cli.errors import fail, user_errors
from fedlab_cli.cli.plot_cmd import plot_hint
from fedlab_cli.cli.presets import find_spec
from fedlab_cli.cli.signals import StopAfterRound, StopRequested
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.launch import WorkerRefusedError, launch
from fedlab_cli.engine.lock import RunLock
from fedlab_cli.engine.rundir import SPEC, RunDir
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError, TrainingDivergedError
from fedlab_cli.paths import check_output_dir
from fedlab_cli.report.live import LiveRoundView, summary_table
from fedlab_cli.spec.load import load_spec


def run_command(
    spec: str | None = typer.Argument(
        None, help="Run spec YAML, or a preset name (see `fedlab list presets`)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a spec key, e.g. --set training.lr=0.05 (repeatable)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue this run directory from its last checkpoint."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live view or summary table."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the summary (and the run dir) as JSON on stdout."
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Run the federation over this many local processes (torch's launcher; clients "
        "split in blocks, gloo on CPU, one GPU each on CUDA). torchrun works too.",
    ),
) -> None:
    """Train one federation of clients and write its run directory."""
    if nproc > 1 and not worker.in_worker():
        try:
            with user_errors():
                launch(nproc, sys.argv[1:])
        except WorkerRefusedError as said:  # rank 0 has printed its one line
            raise typer.Exit(said.exit_code) from None
        return
    worker.configure_threads()
    quiet = quiet or not worker.is_main()
    console = Console(stderr=as_json, quiet=quiet)
    stop = StopAfterRound()
    with user_errors(), stop, _aborts_before_training(stop):
        if resume is not None:
            if spec is not None or overrides:
                raise fail("--resume takes no spec and no --set: the run dir holds its spec")
            target = resume
            summary = _resume(resume, console, stop)
        else:
            if spec is None:
                raise fail("give a run spec (or a preset name), or --resume RUN_DIR")
            path = find_spec(spec)
            resolved = load_spec(path, overrides)
            target = resolved.spec.output.dir or _default_dir(path, resolved.spec.method.name)
            target = worker.agree(resolved.spec, target)  # rank 0's (time-stamped) name
            check_output_dir(target, "output.dir")
            with _locked(target, "output.dir", console):
                session = _with_decode_progress(
                    console, lambda p: RunSession.start(resolved, target, p)
                )
                report_crashes_in(target)
                summary = _train(session, console, stop)
    if not worker.is_main():
        return  # rank 0 prints the summary of the whole run
    if as_json:
        print(json.dumps({"run_dir": str(target), **summary}, indent=2))
    elif not quiet:
        console.print(summary_table(summary, str(target)))
        console.print(f"layer inertia: fedlab inertia report {target}", highlight=False)
        console.print(plot_hint(target), highlight=False, soft_wrap=True)


def _resume(path: Path, console: Console, stop: StopAfterRound) -> dict:
    if (path / "summary.json").is_file():
        console.print(f"[green]{path} is already complete.[/green]", soft_wrap=True)
        return json.loads((path / "summary.json").read_text())
    if not RunDir(path).is_run:
        raise FedlabError(f"--resume: {str(path)!r} is not a run directory (no {SPEC})")
    check_output_dir(path, "--resume")
    with _locked(path, "--resume", console):
        report_crashes_in(path)
        session = _with_decode_progress(console, lambda p: RunSession.resume(path, p))
        return _train(session, console, stop)


def _locked(directory: Path, what: str, console: Console) -> RunLock | nullcontext:
    """The run dir's lock, acquired now (a second writer is refused naming the first); the
    processes of one run share rank 0's."""
    if not worker.is_main():
        return nullcontext()
    lock = RunLock(directory, what).acquire()
    if lock.notice:
        Console(stderr=True).print(f"[bold yellow]WARNING:[/bold yellow] {lock.notice}")
    return lock


@contextmanager
def _aborts_before_training(stop: StopAfterRound) -> Iterator[None]:
    """Ctrl-C or SIGTERM while data loads: one line and 128 + the signal, nothing to resume."""
    try:
        yield
    except KeyboardInterrupt:
        print("error: interrupted before training started", file=sys.stderr)
        raise typer.Exit(stop.abort_code) from None


def _train(session: RunSession, console: Console, stop: StopAfterRound) -> dict:
    if session.notice:
        Console(stderr=True).print(f"[bold yellow]WARNING:[/bold yellow] {session.notice}")
    fed = session.federation
    spec = session.resolved.spec
    title = (
        f"{spec.method.name} · {spec.data.dataset} · {spec.model.name} · "
        f"{spec.data.num_clients} clients · seed {spec.seed} · {fed.device} "
        f"{fed.strategy.name} · → {session.run_dir.path}"
    )
    resume_hint = f"continue with `fedlab run --resume {session.run_dir.path}`"
    stop.arm()
    try:
        with LiveRoundView(console, title, fed.rounds, fed.next_round) as view:
            run(fed, on_round=[session.on_round, view.update, stop.callback(session)])
    except StopRequested as request:
        if worker.is_main():
            print(
                f"stopped after round {request.last_round} (checkpoint saved); {resume_hint}",
                file=sys.stderr,
            )
        raise typer.Exit(request.exit_code) from None
    except KeyboardInterrupt:
        if worker.is_main():
            print(f"interrupted after round {fed.next_round - 1}; {resume_hint}", file=sys.stderr)
        raise typer.Exit(stop.abort_code) from None
    except TrainingDivergedError as err:  # summary.json says so; the last checkpoint stays
        session.finish(diverged=str(err))
        raise fail(f"{err} (summary.json records status diverged)", err.exit_code) from None
    return session.finish()


def _with_decode_progress(console: Console, action):
    """Run ``action(progress_callback)`` with a progress bar for first-time dataset decoding."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        return action(progress)


def _default_dir(spec_path: Path, method: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{spec_path.stem}-{method}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
