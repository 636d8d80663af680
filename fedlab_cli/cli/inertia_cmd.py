"""``fedlab inertia report``: how much each layer of the shared model still moves, per round."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer
from rich.console import Console

from fedlab_cli.cli.errors import fail, user_errors
from fedlab_cli.paths import check_output_file
from fedlab_cli.report.inertia import (
    DEFAULT_THRESHOLD,
    FIGURE_SUFFIXES,
    METRICS,
    load_runs,
    pick_ref_round,
    report,
    to_csv,
    to_json,
    write_png,
)

inertia_app = typer.Typer(
    help="Layer-wise inertia: which layers of the shared model stop moving, and when.",
    no_args_is_help=True,
)


@inertia_app.callback()
def _inertia() -> None:
    """Layer-wise inertia: which layers of the shared model stop moving, and when."""


@inertia_app.command("report")
def report_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="One or more run directories; with two or more, differences to the first."
    ),
    metric: str = typer.Option(
        "cos_ref", "--metric", help=f"What the heatmap shows: {', '.join(METRICS)}."
    ),
    ref_round: int | None = typer.Option(
        None, "--ref-round", help="Which recorded reference round cos_ref is to (default: first)."
    ),
    threshold: float = typer.Option(
        DEFAULT_THRESHOLD, "--threshold", help="Inertia onset: cos_ref stays above this."
    ),
    png: Path | None = typer.Option(
        None, "--png", help="Also write a figure: heatmap and per-layer curves."
    ),
    as_csv: bool = typer.Option(False, "--csv", help="Print the per-layer table as CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Heatmap of a per-layer metric over rounds, and each layer's final cos_ref and onset."""
    with user_errors():
        if metric not in METRICS:
            raise fail(f"--metric: unknown metric {metric!r} (known: {', '.join(METRICS)})")
        if not math.isfinite(threshold) or not -1 <= threshold <= 1:
            raise fail(f"--threshold: a cosine between -1 and 1 (got {threshold})")
        if as_csv and as_json:
            raise fail("--csv and --json: give one of them")
        if png is not None:
            check_output_file(png, "--png", FIGURE_SUFFIXES)
        runs = load_runs(run_dirs)
        ref = pick_ref_round(runs, ref_round)
        if png is not None:
            write_png(runs, png, metric, ref, threshold)
        if as_json:
            print(json.dumps(to_json(runs, metric, ref, threshold), indent=2))
        elif as_csv:
            sys.stdout.write(to_csv(runs, metric, ref, threshold))
        else:
            console = Console()
            for part in report(runs, console, metric, ref, threshold):
                console.print(part, soft_wrap=False)
        if png is not None:
            print(f"wrote {png}", file=sys.stderr)
