"""The run directory: everything a result needs to be trusted and redone.

Layout: ``spec.yaml`` (resolved), ``partition.json``, ``metrics.jsonl`` (one line per round),
``inertia.csv`` (per round and layer), ``checkpoints/round_NNNN.pt``, ``summary.json``.
Whole-file writes go to a temporary file and are renamed into place, so a crash never leaves a
half-written file; a run is complete only once ``summary.json`` exists.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import torch

from fedlab_cli.atomic import atomic_torch_save, atomic_write_text

SPEC, PARTITION, METRICS, SUMMARY, CHECKPOINTS = (
    "spec.yaml",
    "partition.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
)
INERTIA = "inertia.csv"
INERTIA_COLUMNS = (
    "round",
    "layer",
    "role",
    "ref_round",
    "cos_ref",
    "cos_prev",
    "rel_update",
    "grad_norm",
)


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def is_complete(self) -> bool:
        return (self.path / SUMMARY).is_file()

    @property
    def is_run(self) -> bool:
        return (self.path / SPEC).is_file() and (self.path / PARTITION).is_file()

    def create(self, spec_yaml: str, partition: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / PARTITION, json.dumps(partition))
        atomic_write_text(self.path / SPEC, spec_yaml)

    def append_metrics(self, record: dict) -> None:
        """One JSON line per round, written with one call and flushed to disk."""
        _append(self.path / METRICS, json.dumps(record) + "\n")

    def metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything after it is void
        return records

    def keep_metrics_through(self, last_round: int) -> list[dict]:
        """Drop metric lines after ``last_round`` (rounds redone on resume); returns the kept."""
        kept = [r for r in self.metrics() if r["round"] <= last_round]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append_inertia(self, rows: list[tuple]) -> None:
        """Rows in ``INERTIA_COLUMNS`` order, appended with one flushed write; NaN is empty."""
        path = self.path / INERTIA
        text = _csv_text(rows, header=not path.is_file() or path.stat().st_size == 0)
        _append(path, text)

    def inertia_rows(self) -> list[dict[str, str]]:
        """``inertia.csv`` as dicts of strings; a line cut short by a crash ends the file."""
        path = self.path / INERTIA
        if not path.is_file():
            return []
        rows = []
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if None in row or None in row.values() or not row["round"].isdigit():
                    break
                rows.append(row)
        return rows

    def keep_inertia_through(self, last_round: int) -> None:
        """Drop inertia rows after ``last_round`` (rounds redone on resume)."""
        kept = [r for r in self.inertia_rows() if int(r["round"]) <= last_round]
        rows = [tuple(r[c] for c in INERTIA_COLUMNS) for r in kept]
        atomic_write_text(self.path / INERTIA, _csv_text(rows, header=True))

    def checkpoint_path(self, round_index: int) -> Path:
        return self.path / CHECKPOINTS / f"round_{round_index:04d}.pt"

    def checkpoints(self) -> list[Path]:
        return sorted((self.path / CHECKPOINTS).glob("round_*.pt"))

    def save_checkpoint(self, round_index: int, state: dict, keep: int) -> None:
        atomic_torch_save(state, self.checkpoint_path(round_index))
        if keep:
            for old in self.checkpoints()[:-keep]:
                old.unlink()

    def latest_checkpoint(self) -> dict | None:
        found = self.checkpoints()
        return torch.load(found[-1], weights_only=True) if found else None

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / SUMMARY, json.dumps(summary, indent=2) + "\n")

    def summary(self) -> dict:
        return json.loads((self.path / SUMMARY).read_text())


def _csv_text(rows: list[tuple], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(INERTIA_COLUMNS)
    writer.writerows([_csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def _csv_cell(value: object) -> object:
    """Floats with 10 significant digits; NaN (undefined) as an empty cell."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.10g}"
    return value


def _append(path: Path, text: str) -> None:
    """Append with one write, flushed to disk: a crash loses at most this (partial) line."""
    with open(path, "a", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
