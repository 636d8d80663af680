"""``fedlab plot``: accuracy curves of runs, compares and sweeps, in the terminal or a figure."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from fedlab_cli.cli.errors import fail, user_errors
from fedlab_cli.paths import check_output_file
from fedlab_cli.report.curve_plot import terminal_chart, write_figure
from fedlab_cli.report.curves import X_AXES, curves
from fedlab_cli.report.inertia import FIGURE_SUFFIXES


def plot_command(
    paths: list[Path] = typer.Argument(
        ..., help="Run dirs, compare dirs or sweep dirs (a compare or sweep: a band per method)."
    ),
    metric: str = typer.Option("acc_agg", "--metric", help="A metrics.jsonl field, e.g. loss."),
    x_axis: str = typer.Option(
        "round", "--x", help="round, or uplink_bits (cumulative: accuracy for bandwidth)."
    ),
    png: Path | None = typer.Option(
        None, "--png", help="Write a figure (.png, .pdf, .svg) instead of the terminal chart."
    ),
) -> None:
    """One line per run; for a compare or sweep dir one line per method (grid point) with a
    mean ± std band over its seeds."""
    with user_errors():
        if x_axis not in X_AXES:
            raise fail(f"--x: expected one of {', '.join(X_AXES)} (got {x_axis!r})")
        if png is not None:
            check_output_file(png, "--png", FIGURE_SUFFIXES)
        series = curves(paths, metric, x_axis)
        if png is not None:
            write_figure(series, png, metric, x_axis)
            print(f"wrote {png}", file=sys.stderr)
        else:
            Console().print(terminal_chart(series, metric, x_axis), soft_wrap=True)


def plot_hint(target: Path) -> str:
    """The line ``run`` and ``compare`` end with."""
    return f"curves: fedlab plot {target} [--x uplink_bits] [--png curves.png]"
