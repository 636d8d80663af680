"""``fedlab compare``: several methods on identical clients and seeds, one table of results."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.cli import launch_options
from fedlab_cli.cli.boundary import report_crashes_in
from fedlab_cli.cli.errors import fail, user_errors
from fedlab_cli.cli.plot_cmd import plot_hint
from fedlab_cli.cli.presets import find_spec
from fedlab_cli.cli.signals import StopAfterRound, StopRequested
from fedlab_cli.engine.compare import (
    FINGERPRINTS,
    CompareEvents,
    CompletedRun,
    PlannedRun,
    execute,
    file_sha256,
    plan_compare,
    read_fingerprints,
)
from fedlab_cli.engine.federation import RoundRecord
from fedlab_cli.engine.launcher import Job, SlurmOptions
from fedlab_cli.engine.lock import RunLock
from fedlab_cli.engine.rundir import PARTITION
from fedlab_cli.engine.session import RunSession
from fedlab_cli.paths import check_output_dir
from fedlab_cli.report.compare import RunResult, compare, comparison_table, write_files
from fedlab_cli.spec.types import MAX_SEED

DEFAULT_PRESET = "cifar10_fedbn"
"""The paper's CIFAR-10 protocol (VGG6, Dir 0.5, 100 clients x 100/400, 300 rounds)."""


def compare_command(
    methods: list[str] = typer.Argument(..., help="Methods to compare; the first is the baseline."),
    preset: str = typer.Option(
        DEFAULT_PRESET, "--preset", help="Spec file or preset name giving the shared protocol."
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds, e.g. 0,1,2."),
    clients: int | None = typer.Option(None, "--clients", help="Sets data.num_clients."),
    alpha: float | None = typer.Option(None, "--alpha", help="Sets data.alpha (Dirichlet)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Sets federation.rounds."),
    samples: int | None = typer.Option(None, "--samples", help="Sets data.train_per_client."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="Override a spec key for every run; method.KEY goes to the methods that take it, "
        "METHOD:method.KEY=V to one method only (repeatable).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Compare dir (default: runs/compare-<preset>-<methods>[-<flags>])."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or table."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json on stdout."),
    jobs: int = launch_options.JOBS,
    launcher: str = launch_options.LAUNCHER,
    slurm_partition: str | None = launch_options.PARTITION,
    gpus_per_job: int = launch_options.GPUS,
    max_parallel: int | None = launch_options.MAX_PARALLEL,
) -> None:
    """Run every method on every seed (same partitions and initial weights per seed) and
    tabulate final accuracy, paired differences to the first method and their significance.
    Rerunning the same command reuses finished runs and resumes interrupted ones."""
    shortcuts = {"clients": clients, "alpha": alpha, "rounds": rounds, "samples": samples}
    progress_console = Console(stderr=True, quiet=quiet)
    with user_errors():
        launch_options.check_launcher(launcher)
        seed_list = parse_seeds(seeds)
        path = find_spec(preset)
        target = out or default_out(path, methods, shortcuts)
        check_output_dir(target, "--out")
        plan = plan_compare(path, methods, seed_list, target, shortcuts, overrides)
        with ExitStack() as locks:
            _lock_all(locks, target, plan, progress_console)
            _announce(progress_console, plan, target)
            report_crashes_in(target)
            if jobs > 1 or launcher == "slurm":
                slurm = launch_options.slurm_options(slurm_partition, gpus_per_job, max_parallel)
                completed = _execute_jobs(plan, target, progress_console, launcher, jobs, slurm)
            else:
                completed = _execute(plan, target, progress_console)
            results = [
                RunResult.from_summary(c.summary, c.path, c.init_sha256, c.partition_sha256)
                for c in completed
            ]
            comparison = compare(results, methods)
            context = {
                "preset": str(path),
                "compare_dir": str(target),
                "shortcuts": {k: v for k, v in shortcuts.items() if v is not None},
                "overrides": overrides,
            }
            files = write_files(target, results, comparison, context)
    if as_json:
        print(files[-1].read_text(), end="")
    elif not quiet:
        console = Console()
        console.print(comparison_table(comparison, _title(completed[0].summary, target, plan)))
        console.print(f"files: {', '.join(str(f) for f in files)}", soft_wrap=True)
        console.print(plot_hint(target), highlight=False, soft_wrap=True)


def _lock_all(locks: ExitStack, target: Path, plan: list[PlannedRun], console: Console) -> None:
    """Own the compare dir and every run dir of the plan, so that neither a second compare nor
    a ``fedlab run --resume`` of one of its runs writes into them at the same time."""
    for directory in [target, *(p.path for p in plan)]:
        lock = locks.enter_context(RunLock(directory, "--out"))
        if lock.notice:
            console.print(f"[bold yellow]WARNING:[/bold yellow] {lock.notice}")


def _execute(plan: list[PlannedRun], target: Path, console: Console):
    """Every planned run; a signal stops after the current round with a checkpoint."""
    view = ProgressView(console, len(plan))
    continue_hint = f"finished runs are kept in {target} — rerun the same command to continue"
    try:
        with view.stop, view.progress:
            return execute(plan, target, view, view.decode_progress)
    except StopRequested as request:
        print(
            f"stopped {view.current} after round {request.last_round} (checkpoint saved); "
            f"{continue_hint}",
            file=sys.stderr,
        )
        raise typer.Exit(request.exit_code) from None
    except KeyboardInterrupt:
        print(f"interrupted during {view.current}; {continue_hint}", file=sys.stderr)
        raise typer.Exit(view.stop.abort_code) from None


def _execute_jobs(
    plan: list[PlannedRun],
    target: Path,
    console: Console,
    launcher: str,
    jobs: int,
    slurm: SlurmOptions,
) -> list[CompletedRun]:
    """The plan as a sweep over methods: in worker processes or a Slurm array. A diverged run
    is a result of the table, as one by one; a failed run ends the compare with one line once
    the others are done (they are kept)."""
    fingerprints = read_fingerprints(target)
    by_path = {str(p.path): p for p in plan}
    work = [Job(str(p.path), p.resolved.to_dict()) for p in plan]
    done: dict[str, CompletedRun] = {}
    failed: list[str] = []
    for result in launch_options.launch(work, launcher, jobs, slurm, target / "slurm", console):
        planned = by_path[result.path]
        summary = result.summary
        if result.error is not None:  # a diverged run is a result, as one by one
            failed.append(f"{planned.key}: {result.error}")
            console.print(f"[red]{planned.key} failed[/red]: {failed[-1]}", highlight=False)
            continue
        if result.init_sha256 is not None:
            fingerprints[planned.key] = result.init_sha256
            atomic_write_text(target / FINGERPRINTS, json.dumps(fingerprints, indent=2) + "\n")
        name = f"{planned.method} seed {planned.seed}"
        console.print(result_line(name, summary, planned.status, planned.path), **LINE)
        done[planned.key] = CompletedRun(
            planned.method,
            planned.seed,
            planned.path,
            summary,
            fingerprints.get(planned.key),
            file_sha256(planned.path / PARTITION),
        )
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise fail(f"{failed[0]}{more}; finished runs are kept in {target}", 1)
    return [done[p.key] for p in plan]


LINE = {"highlight": False, "soft_wrap": True}
HOW = {"done": "reused", "resume": "resumed", "start": "trained"}


def result_line(name: str, summary: dict, status: str, path: Path) -> str:
    """One finished run of a compare or sweep: its result, how it came about, where it is."""
    final = summary["final_accuracy"]
    result = "final —" if final is None else f"final {final:.2f}%"
    if summary.get("status") == "diverged":
        result = f"[bold red]DIVERGED[/bold red] ({summary.get('diverged')}), {result}"
    return (
        f"{name}: {result} ({summary['final_metric']}, {summary['rounds']} rounds, "
        f"{summary['wall_seconds']:.0f} s) {HOW[status]} · {path}"
    )


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; anything else is a one-line error."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        expected = "expected comma-separated integers like 0,1,2"
        raise fail(f"--seeds: {expected}, got {shown!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise fail(f"--seeds: expected distinct non-negative integers like 0,1,2, got {shown!r}")
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise fail(
            f"--seeds: seeds are integers from 0 to {MAX_SEED} (numpy's range), got {shown!r}"
        )
    return seeds


def default_out(preset: Path, methods: list[str], shortcuts: dict) -> Path:
    """A stable name, so that rerunning the same command finds its runs again."""
    flags = "".join(f"-{k}{v}" for k, v in shortcuts.items() if v is not None)
    return Path("runs") / f"compare-{preset.stem}-{'-'.join(methods)}{flags}"


def _announce(console: Console, plan: list[PlannedRun], target: Path) -> None:
    counts = {s: sum(p.status == s for p in plan) for s in ("done", "resume", "start")}
    console.print(
        f"compare → {target}: {len(plan)} runs ({counts['done']} done, "
        f"{counts['resume']} to resume, {counts['start']} to start)",
        soft_wrap=True,
        highlight=False,
    )


def _title(summary: dict, target: Path, plan: list[PlannedRun]) -> str:
    spec = plan[0].resolved.spec
    return (
        f"{summary['dataset']} · {summary['model']} · {spec.data.num_clients} clients · "
        f"{split_label(spec.data)} · {spec.federation.rounds} rounds — {target}"
    )


def split_label(data) -> str:
    """How the clients' data is split: the Dirichlet α only where the partition has one."""
    if data.partition in ("dirichlet", "balanced_dirichlet"):
        return f"Dir {data.alpha}"
    if data.partition == "pathological":
        return f"{data.classes_per_client} classes each"
    return data.partition


class ProgressView(CompareEvents):
    """Runs done out of all, and the current run's rounds, on stderr; a line per finished run."""

    def __init__(self, console: Console, total_runs: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.runs = self.progress.add_task("runs done", total=total_runs)
        self.rounds = self.progress.add_task("", total=1, visible=False)
        self.decoding: dict[str, int] = {}
        self.current = "the first run"
        self.stop = StopAfterRound(lambda text: console.print(text, highlight=False))
        self.session: RunSession | None = None

    def run_started(self, run: PlannedRun, session: RunSession) -> None:
        fed = session.federation
        self.session = session
        self.stop.arm()
        self.current = f"{run.method} seed {run.seed}"
        if session.notice:
            self.console.print(f"[bold yellow]WARNING:[/bold yellow] {session.notice}")
        if fed.next_round:
            self.console.print(f"{self.current}: resuming at round {fed.next_round}")
        self.progress.reset(
            self.rounds,
            total=fed.rounds,
            completed=fed.next_round,
            description=f"{self.current} · acc_agg   —   · rounds",
            visible=True,
        )

    def round_done(self, run: PlannedRun, record: RoundRecord) -> None:
        if record.acc_agg is None:  # not an evaluation round: keep the last accuracy shown
            self.progress.update(self.rounds, completed=record.round + 1)
        else:
            self.progress.update(
                self.rounds,
                completed=record.round + 1,
                description=f"{self.current} · acc_agg {record.acc_agg:6.2f} · rounds",
            )
        if self.session is not None:  # after a signal: checkpoint this round and stop
            self.stop.callback(self.session)(record)

    def run_done(self, run: PlannedRun, summary: dict) -> None:
        line = result_line(f"{run.method} seed {run.seed}", summary, run.status, run.path)
        self.console.print(line, **LINE)
        self.progress.update(self.rounds, visible=False)
        self.progress.advance(self.runs)

    def decode_progress(self, description: str, done: int, total: int) -> None:
        """First-time dataset decoding (CIFAR, Tiny-ImageNet)."""
        if description not in self.decoding:
            self.decoding[description] = self.progress.add_task(description, total=total)
        self.progress.update(self.decoding[description], completed=done, total=total)
        if done >= total:
            self.progress.update(self.decoding[description], visible=False)
