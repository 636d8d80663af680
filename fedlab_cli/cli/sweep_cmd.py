"""``fedlab sweep``: a grid of settings x seeds, run here, in worker processes or on Slurm,
summarised as the compare table grouped by grid point (and, for a paper table, side by side
with the published numbers)."""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.cli import launch_options
from fedlab_cli.cli.boundary import report_crashes_in
from fedlab_cli.cli.compare_cmd import LINE, parse_seeds, result_line
from fedlab_cli.cli.errors import fail, user_errors
from fedlab_cli.cli.plot_cmd import plot_hint
from fedlab_cli.cli.presets import find_spec
from fedlab_cli.engine.grid import OWNED, parse_grid, points, restrict
from fedlab_cli.engine.launcher import Job, SlurmOptions
from fedlab_cli.engine.lock import RunLock
from fedlab_cli.engine.rundir import PARTITION
from fedlab_cli.engine.sweep import (
    SweepRun,
    plan_sweep,
    read_failures,
    synthetic_stand_in,
    write_failures,
    write_index,
)
from fedlab_cli.engine.sweep_file import is_sweep_file, load_sweep_file
from fedlab_cli.paths import check_output_dir
from fedlab_cli.report.compare import RunResult, compare, comparison_table, write_files
from fedlab_cli.report.paper import cells, cells_json, paper_table
from fedlab_cli.spec.load import read_yaml

SHORTCUTS = {"rounds": "federation.rounds", "clients": "data.num_clients"}


def sweep_command(
    spec: str = typer.Argument(..., help="Run spec or sweep file (e.g. presets/paper/*.yaml)."),
    grid: list[str] = typer.Option(
        [], "--grid", help="An axis: key=v1,v2 (repeatable; the product of all axes is run)."
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Keep some settings of an axis: AXIS=LABEL,LABEL (repeatable)."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated seeds (default: the sweep file's, else 0)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a spec key for every run (repeatable)."
    ),
    rounds: int | None = typer.Option(
        None, "--rounds", min=1, help="Sets federation.rounds (shrinks a paper protocol)."
    ),
    clients: int | None = typer.Option(
        None, "--clients", min=1, help="Sets data.num_clients (shrinks a paper protocol)."
    ),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="Run on the synthetic stand-ins of the datasets (no files)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Sweep dir (default: runs/sweep-...)."),
    jobs: int = launch_options.JOBS,
    launcher: str = launch_options.LAUNCHER,
    slurm_partition: str | None = launch_options.PARTITION,
    gpus_per_job: int = launch_options.GPUS,
    max_parallel: int | None = launch_options.MAX_PARALLEL,
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Start the runs that failed before again."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines or table."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json on stdout."),
) -> None:
    """Every grid point on every seed; rerunning reuses finished runs, resumes interrupted
    ones and skips failed ones (unless --retry-failed)."""
    console = Console(stderr=True, quiet=quiet)
    with user_errors():
        launch_options.check_launcher(launcher)
        path = find_spec(spec)
        raw = read_yaml(path)
        sweep = load_sweep_file(path, raw) if is_sweep_file(raw) else None
        base = sweep.base if sweep else raw
        file_axes = restrict(sweep.axes if sweep else [], only)
        axes = file_axes + parse_grid(grid)
        if seeds is not None:
            seed_list = parse_seeds(seeds)
        else:
            seed_list = (sweep.seeds if sweep and sweep.seeds else None) or [0]
        for item in overrides:
            key = item.partition("=")[0].strip()
            if key in OWNED:
                raise fail(f"--set {key}: a sweep sets it from {OWNED[key]}")
        shortcuts = {k: v for k, v in {"rounds": rounds, "clients": clients}.items() if v}
        after = [f"{SHORTCUTS[k]}={v}" for k, v in shortcuts.items()] + list(overrides)
        target = out or default_out(path, grid + only, after, synthetic)
        check_output_dir(target, "--out")
        transform = synthetic_stand_in if synthetic else None
        plan = plan_sweep(base, points(axes), seed_list, target, after, retry_failed, transform)
        with ExitStack() as locks:
            for directory in dict.fromkeys([target, *(r.path for r in plan)]):
                lock = locks.enter_context(RunLock(directory, "--out"))
                if lock.notice:
                    console.print(f"[bold yellow]WARNING:[/bold yellow] {lock.notice}")
            report_crashes_in(target)
            context = {
                "spec": str(path),
                "axes": [a.name for a in axes],
                "seeds": seed_list,
                "shortcuts": shortcuts,
                "overrides": list(overrides),
                "synthetic": synthetic,
            }
            write_index(target, plan, context)
            _announce(console, plan, target, launcher, jobs)
            summaries, failures = _execute(
                plan,
                target,
                console,
                launcher,
                jobs,
                launch_options.slurm_options(slurm_partition, gpus_per_job, max_parallel),
            )
            results = _results(plan, summaries)
            files, comparison = _write_summary(target, plan, results, context)
            paper_cells = None
            if sweep and sweep.paper and len(axes) == len(file_axes):
                labels = {r.label: r.point.labels() for r in plan}
                paper_cells = cells(sweep.paper, [a.name for a in axes], labels, results)
                paper_json = cells_json(paper_cells, shortcuts, synthetic, overrides)
                atomic_write_text(target / "paper.json", json.dumps(paper_json, indent=2) + "\n")
    if as_json and files:
        print(files[-1].read_text(), end="")
    elif not quiet and comparison is not None:
        table_console = Console()
        title = f"sweep of {path.name}: {len(plan)} runs — {target}"
        table_console.print(comparison_table(comparison, title))
        if paper_cells is not None:
            shown = paper_table(sweep.paper, paper_cells, shortcuts, synthetic, overrides)
            table_console.print(shown)
        table_console.print(plot_hint(target), highlight=False, soft_wrap=True)
    if failures:
        raise fail(
            f"{len(failures)} of {len(plan)} runs failed (see {target / 'failures.json'}); "
            "rerun with --retry-failed to start them again",
            1,
        )


def default_out(path: Path, grid: list[str], after: list[str], synthetic: bool) -> Path:
    """A stable name per sweep command (seeds excepted: more seeds reuse the runs)."""
    text = json.dumps([grid, after, synthetic])
    tag = hashlib.sha256(text.encode()).hexdigest()[:8]
    return Path("runs") / f"sweep-{path.stem}-{tag}"


def _announce(console: Console, plan: list[SweepRun], target: Path, launcher: str, jobs: int):
    counts = {s: sum(r.status == s for r in plan) for s in ("done", "resume", "start", "failed")}
    how = "slurm array" if launcher == "slurm" else f"{jobs} at once" if jobs > 1 else "one by one"
    console.print(
        f"sweep → {target}: {len(plan)} runs ({counts['done']} done, {counts['resume']} to "
        f"resume, {counts['start']} to start, {counts['failed']} failed before), {how}",
        soft_wrap=True,
        highlight=False,
    )


def _execute(
    plan: list[SweepRun],
    target: Path,
    console: Console,
    launcher: str,
    jobs: int,
    slurm: SlurmOptions,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every runnable run to completion; returns summaries and failures by run dir name."""
    failures = read_failures(target)
    summaries: dict[str, dict] = {}
    todo = [r for r in plan if r.status != "failed"]
    by_path = {str(r.path): r for r in todo}  # cells that resolve to one spec share its run
    work = [
        Job(str(r.path), r.resolved.to_dict(), fresh=r.path.name in failures or r.status == "start")
        for r in by_path.values()
    ]
    for result in launch_options.launch(work, launcher, jobs, slurm, target / "slurm", console):
        run = by_path[result.path]
        name = run.path.name
        if result.error is None and result.summary.get("status") != "diverged":
            failures.pop(name, None)
            summaries[name] = result.summary
            console.print(result_line(run.name, result.summary, run.status, run.path), **LINE)
        else:
            error = result.error or result.summary.get("diverged", "diverged")
            failures[name] = {"label": run.label, "seed": run.seed, "error": error}
            console.print(f"[red]{run.name} failed[/red]: {error}", highlight=False)
        write_failures(target, failures)
    failed_now = {n: f for n, f in failures.items() if n in {r.path.name for r in plan}}
    return summaries, failed_now


def _results(plan: list[SweepRun], summaries: dict[str, dict]) -> list[RunResult]:
    found = []
    for run in plan:
        summary = summaries.get(run.path.name)
        if summary is None:
            continue
        result = RunResult.from_summary(summary, run.path, None, _sha(run.path / PARTITION))
        found.append(replace(result, method=run.label))
    return found


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _write_summary(target: Path, plan: list[SweepRun], results: list[RunResult], context: dict):
    """The compare table over the grid points whose every seed finished (first point: the
    baseline of the paired differences)."""
    seeds = sorted({r.seed for r in plan})
    labels = list(dict.fromkeys(r.label for r in plan))
    complete = [
        label for label in labels if sorted(x.seed for x in results if x.method == label) == seeds
    ]
    if not complete:
        return [], None
    kept = [r for r in results if r.method in complete]
    comparison = compare(kept, complete)
    comparison.notes[:] = [n for n in comparison.notes if not n.startswith(("The ", "WARNING"))]
    missing = [label for label in labels if label not in complete]
    if missing:
        comparison.notes.append(f"Not in the table (a seed did not finish): {'; '.join(missing)}.")
    return write_files(target, kept, comparison, context), comparison
