"""``metrics.csv``: the scalar columns of ``metrics.jsonl``, for spreadsheets and pandas."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.tracking.scalars import round_scalars

METRICS_CSV = "metrics.csv"


class CsvLogger:
    """Rewrites ``metrics.csv`` atomically after every round from all rounds so far, so the
    file always equals ``metrics.jsonl`` (after a resume too) and takes columns a later round
    adds; a few hundred rounds make this cheap."""

    def __init__(self, run_dir: Path, past: list[dict]) -> None:
        self.path = Path(run_dir) / METRICS_CSV
        self.rows = [_row(r) for r in past]
        self._write()

    def log_round(self, record: dict, inertia: Sequence[dict]) -> None:
        self.rows.append(_row(record))
        self._write()

    def close(self, summary: dict | None = None) -> None:
        """Nothing is held open."""

    def _write(self) -> None:
        atomic_write_text(self.path, metrics_csv(self.rows))


def _row(record: dict) -> dict[str, float | int]:
    return {"round": record["round"], **round_scalars(record)}


def metrics_csv(rows: list[dict]) -> str:
    """Columns in order of first appearance; a value a round lacks is an empty cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
