"""What a tracker plots: the numbers of one round, and the run's settings, as flat scalars."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

SKIPPED = {"round"}
"""The step itself is not a scalar of its own."""


def round_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """Every number of a metrics.jsonl line (loss, accuracies, bits, method metrics); a dict
    of numbers (``grad_norms``) becomes ``key/inner``; lists (per-client values) and None (a
    round without evaluation) are left out."""
    found: dict[str, float] = {}
    for key, value in record.items():
        if key in SKIPPED:
            continue
        if isinstance(value, Mapping):
            for inner, number in value.items():
                if _is_number(number):
                    found[f"{key}/{inner}"] = float(number)
        elif _is_number(value):
            found[key] = float(value)
    return found


def inertia_scalars(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """One round's inertia rows as ``inertia/<column>/<layer>``; ``cos_ref`` per reference
    round (``inertia/cos_ref@R/<layer>``); undefined values (NaN, empty) left out."""
    found: dict[str, float] = {}
    for row in rows:
        layer = row["layer"]
        values = {
            f"cos_ref@{int(row['ref_round'])}": row["cos_ref"],
            "cos_prev": row["cos_prev"],
            "rel_update": row["rel_update"],
            "grad_norm": row["grad_norm"],
        }
        for column, value in values.items():
            number = _number(value)
            if number is not None:
                found[f"inertia/{column}/{layer}"] = number
    return found


def by_round(rows: list[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """Inertia rows grouped by their round."""
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(int(row["round"]), []).append(row)
    return grouped


def hparams(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved spec as ``section.key`` -> bool/int/float/str (what hparams plugins take)."""
    return {key: _plain(value) for key, value in _flat(spec)}


def _flat(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _plain(value: Any) -> Any:
    if value is None:
        return "none"
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    """A float from a live value or a CSV cell; None where undefined."""
    if value is None or value == "":
        return None
    number = float(value)
    return number if math.isfinite(number) else None
