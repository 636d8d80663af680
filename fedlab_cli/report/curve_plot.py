"""Drawing the curves of ``report.curves``: a character chart for the terminal, a figure file."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.text import Text

from fedlab_cli.atomic import atomic_write_bytes
from fedlab_cli.report.curves import Series

MARKS = "●▲■◆✚○△□"
COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_white", "bright_cyan")
X_LABELS = {"round": "round", "uplink_bits": "cumulative uplink bits"}


def terminal_chart(
    series: Sequence[Series], metric: str, x_axis: str, width: int = 64, height: int = 14
) -> Text:
    """Each series' mean as a line of its own mark (linear interpolation per column), the
    ± std band as dots in the same colour, y and x ranges on the axes, then a legend."""
    xs = np.concatenate([s.x for s in series])
    lows = np.concatenate([s.mean - (s.std if s.std is not None else 0) for s in series])
    highs = np.concatenate([s.mean + (s.std if s.std is not None else 0) for s in series])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(lows.min()), float(highs.max())
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]

    def row_of(value: float) -> int:
        return height - 1 - round((value - y0) / (y1 - y0) * (height - 1))

    for index, s in enumerate(series):
        mark, colour = MARKS[index % len(MARKS)], COLOURS[index % len(COLOURS)]
        columns = _columns(s.x, x0, x1, width)
        for column, at in columns:
            mean = float(np.interp(at, s.x, s.mean))
            if s.std is not None:
                spread = float(np.interp(at, s.x, s.std))
                for row in range(row_of(mean + spread), row_of(mean - spread) + 1):
                    if grid[row][column] is None:
                        grid[row][column] = ("·", colour)
            grid[row_of(mean)][column] = (mark, colour)
    out = Text()
    out.append(f"{metric} against {X_LABELS[x_axis]}\n", style="bold")
    for row in range(height):
        ends = {0: f"{y1:8.2f} ┤", height - 1: f"{y0:8.2f} ┤"}
        out.append(ends.get(row, " " * 9 + "│"))
        for cell in grid[row]:
            out.append(*(cell or (" ",)))
        out.append("\n")
    out.append(" " * 9 + "└" + "─" * width + "\n")
    left, right = _tick(x0, x_axis), _tick(x1, x_axis)
    out.append(" " * 10 + left + " " * max(1, width - len(left) - len(right)) + right + "\n")
    for index, s in enumerate(series):
        mark, colour = MARKS[index % len(MARKS)], COLOURS[index % len(COLOURS)]
        band = f" ± std over {len(s.runs)} runs" if s.std is not None else ""
        out.append(f"  {mark} ", style=colour)
        out.append(f"{s.label}: final {s.mean[-1]:.2f}{band}\n")
    return out


def _columns(x: np.ndarray, x0: float, x1: float, width: int) -> list[tuple[int, float]]:
    """The chart columns the series spans, each with the x value at its centre."""
    span = x1 - x0 or 1.0
    first = math.floor((float(x.min()) - x0) / span * (width - 1))
    last = math.ceil((float(x.max()) - x0) / span * (width - 1))
    return [(c, x0 + c / max(1, width - 1) * span) for c in range(first, last + 1)]


def _tick(value: float, x_axis: str) -> str:
    if x_axis == "round":
        return f"{value:.0f}"
    return f"{value:.3g}"


def write_figure(series: Sequence[Series], path: Path, metric: str, x_axis: str) -> None:
    """One line per series, its ± std band shaded; written atomically (format by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for s in series:
        runs = f" (n={len(s.runs)})" if len(s.runs) > 1 else ""
        (line,) = ax.plot(s.x, s.mean, lw=2, label=f"{s.label}{runs}")
        if s.std is not None:
            ax.fill_between(
                s.x, s.mean - s.std, s.mean + s.std, color=line.get_color(), alpha=0.2, lw=0
            )
    if x_axis == "round":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(X_LABELS[x_axis])
    ax.set_ylabel(f"{metric} (%)" if metric.startswith("acc") else metric)
    if any(s.std is not None for s in series):
        ax.set_title("mean ± sample std over seeds", loc="left", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=150, format=Path(path).suffix.lower().lstrip(".") or "png")
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
