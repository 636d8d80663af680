"""A paper's table beside ours: the published value, our mean ± std over seeds and the
difference in every cell, marked when the protocol was shrunk or the data synthetic."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

from fedlab_cli.errors import FedlabError
from fedlab_cli.report.compare import DASH, RunResult

_PUBLISHED = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:±\s*(\d+(?:\.\d+)?))?")


@dataclass(frozen=True)
class Cell:
    row: str
    column: str
    paper: float | None
    paper_std: float | None
    ours: float | None
    ours_std: float | None
    seeds: int

    @property
    def diff(self) -> float | None:
        if self.paper is None or self.ours is None:
            return None
        return self.ours - self.paper


def published(value: Any) -> tuple[float | None, float | None]:
    """``86.21±1.66`` -> (86.21, 1.66); ``74.78 (+2.09)`` -> (74.78, None); none -> (None, None)."""
    if value is None:
        return None, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    found = _PUBLISHED.match(str(value))
    if not found:
        raise FedlabError(f"paper.values: expected a number like 86.21±1.66, got {value!r}")
    return float(found.group(1)), float(found.group(2)) if found.group(2) else None


def cells(
    paper: dict[str, Any], axes: Sequence[str], labels: dict[str, tuple[str, ...]],
    results: list[RunResult],
) -> list[Cell]:  # fmt: skip
    """Every (row, column) of the paper's table with its published and our numbers.

    ``labels`` maps each grid point's label to its per-axis labels, in ``axes`` order."""
    rows_axis, columns_axis = paper.get("rows"), paper.get("columns")
    if rows_axis not in axes or columns_axis not in axes:
        raise FedlabError(
            f"paper: rows and columns must name axes of the sweep ({', '.join(axes)}), "
            f"got {rows_axis!r} and {columns_axis!r}"
        )
    r, c = axes.index(rows_axis), axes.index(columns_axis)
    finals: dict[tuple[str, str], list[float]] = {}
    for result in results:
        parts = labels[result.method]
        finals.setdefault((parts[r], parts[c]), []).append(result.final_accuracy)
    rows = list(dict.fromkeys(parts[r] for parts in labels.values()))
    columns = list(dict.fromkeys(parts[c] for parts in labels.values()))
    values = paper.get("values") or {}
    found = []
    for row in rows:
        for column in columns:
            value, std = published((values.get(row) or {}).get(column))
            ours = finals.get((row, column), [])
            found.append(
                Cell(
                    row,
                    column,
                    value,
                    std,
                    statistics.fmean(ours) if ours else None,
                    statistics.stdev(ours) if len(ours) > 1 else None,
                    len(ours),
                )
            )
    return found


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return DASH
    return f"{mean:.2f}" if std is None else f"{mean:.2f}±{std:.2f}"


def shrunk_note(
    shortcuts: dict[str, int], synthetic: bool, overrides: Sequence[str] = ()
) -> str | None:
    parts = [f"--{k} {v}" for k, v in shortcuts.items()] + [f"--set {o}" for o in overrides]
    if synthetic:
        parts.append("synthetic stand-in data")
    if not parts:
        return None
    return (
        f"SHRUNK: {', '.join(parts)} — not the paper's protocol; the differences show how far "
        "a shrunk run is from the published numbers, not a reproduction."
    )


def paper_table(
    paper: dict[str, Any],
    found: list[Cell],
    shortcuts: dict[str, int],
    synthetic: bool,
    overrides: Sequence[str] = (),
) -> Table:
    """One row per paper row, one column per paper column; each cell: paper / ours / Δ."""
    note = shrunk_note(shortcuts, synthetic, overrides)
    title = paper.get("title", "paper table")
    table = Table(
        title=f"{title}{' [SHRUNK]' if note else ''}",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    columns = list(dict.fromkeys(cell.column for cell in found))
    table.add_column("")
    for column in columns:
        table.add_column(column, justify="right")
    for row in dict.fromkeys(cell.row for cell in found):
        by_column = {cell.column: cell for cell in found if cell.row == row}
        table.add_row(row, *(_cell_text(by_column[c]) for c in columns))
    table.caption = "\n".join(
        line
        for line in [
            "Each cell: paper (published), ours (mean ± sample std over seeds), Δ = ours − paper.",
            note,
            paper.get("note"),
        ]
        if line
    )
    return table


def _cell_text(cell: Cell) -> str:
    diff = DASH if cell.diff is None else f"{cell.diff:+.2f}"
    return (
        f"paper {_mean_std(cell.paper, cell.paper_std)}\n"
        f"ours {_mean_std(cell.ours, cell.ours_std)}\nΔ {diff}"
    )


def cells_json(
    found: list[Cell], shortcuts: dict[str, int], synthetic: bool, overrides: Sequence[str] = ()
) -> dict:
    return {
        "shrunk": shrunk_note(shortcuts, synthetic, overrides) is not None,
        "overrides": list(overrides),
        "shortcuts": shortcuts,
        "synthetic": synthetic,
        "cells": [{**cell.__dict__, "diff": cell.diff} for cell in found],
    }
