"""Accuracy curves: per run, or per method (grid point) as mean ± std over seeds.

Pure functions of the runs' ``metrics.jsonl``, so a test can check the plotted arrays against
the runs; the terminal chart and the figure only draw what ``curves`` returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlab_cli.engine.rundir import SPEC, RunDir
from fedlab_cli.errors import FedlabError

X_AXES = ("round", "uplink_bits")
SWEEP_INDEX = "sweep.json"
"""A sweep dir lists its runs and their grid points here (see engine/sweep.py)."""


@dataclass(frozen=True)
class RunPoints:
    """One run's curve: the evaluated rounds, their x values and the metric."""

    path: Path
    rounds: np.ndarray
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Series:
    """One line of the plot; ``std`` (sample, ddof=1) only where more than one run is averaged."""

    label: str
    rounds: np.ndarray
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    runs: tuple[Path, ...]


def run_points(path: Path, records: list[dict], metric: str, x_axis: str) -> RunPoints:
    """Rounds where ``metric`` was recorded; x is the round or the uplink bits sent so far
    (summed over every round up to and including it, evaluated or not)."""
    ordered = sorted(records, key=lambda r: r["round"])
    if not ordered:
        raise FedlabError(f"{path}: metrics.jsonl holds no round yet")
    if not any(metric in r for r in ordered):
        known = sorted(k for k, v in ordered[-1].items() if _is_number(v) and k != "round")
        raise FedlabError(f"--metric: {path} records no {metric!r} (known: {', '.join(known)})")
    uplink = np.cumsum([float(r.get("uplink_bits", 0.0)) for r in ordered])
    keep = [i for i, r in enumerate(ordered) if _is_number(r.get(metric))]
    rounds = np.array([ordered[i]["round"] for i in keep], dtype=int)
    x = rounds.astype(float) if x_axis == "round" else uplink[keep]
    y = np.array([float(ordered[i][metric]) for i in keep])
    return RunPoints(Path(path), rounds, x, y)


def band(label: str, runs: Sequence[RunPoints]) -> Series:
    """Mean and sample std over runs at the rounds they all recorded (x averaged too: the
    bits a method sends can differ by seed)."""
    common = sorted(set.intersection(*(set(r.rounds.tolist()) for r in runs)))
    if not common:
        raise FedlabError(f"{label}: its runs share no evaluated round")
    ys = np.stack([r.y[np.searchsorted(r.rounds, common)] for r in runs])
    xs = np.stack([r.x[np.searchsorted(r.rounds, common)] for r in runs])
    std = ys.std(axis=0, ddof=1) if len(runs) > 1 else None
    return Series(
        label, np.array(common), xs.mean(axis=0), ys.mean(axis=0), std, tuple(r.path for r in runs)
    )


def groups(path: Path) -> list[tuple[str, list[Path]]]:
    """The lines a directory gives: a run dir is one; a sweep dir one per grid point (its
    ``sweep.json``); a compare dir one per method (``<method>/seed<S>/``)."""
    path = Path(path)
    if RunDir(path).is_run:
        return [(path.name, [path])]
    index = path / SWEEP_INDEX
    if index.is_file():
        grouped: dict[str, list[Path]] = {}
        for entry in json.loads(index.read_text())["runs"]:
            run = path / entry["dir"]
            if (run / "metrics.jsonl").is_file():
                grouped.setdefault(entry["label"], []).append(run)
        return list(grouped.items())
    found: dict[str, list[Path]] = {}
    for spec in sorted(path.glob(f"*/seed*/{SPEC}")):
        found.setdefault(spec.parent.parent.name, []).append(spec.parent)
    if not found:
        raise FedlabError(
            f"plot: {str(path)!r} is neither a run dir (no {SPEC}) nor a compare or sweep dir"
        )
    return list(found.items())


def curves(paths: Sequence[Path], metric: str = "acc_agg", x_axis: str = "round") -> list[Series]:
    """Every line to draw for ``paths``: a run's own curve, or a group's band over seeds."""
    if x_axis not in X_AXES:
        raise FedlabError(f"--x: expected one of {', '.join(X_AXES)} (got {x_axis!r})")
    found: list[Series] = []
    for path in paths:
        prefix = f"{Path(path).name}/" if len(paths) > 1 and not RunDir(path).is_run else ""
        for label, runs in groups(path):
            points = [run_points(r, RunDir(r).metrics(), metric, x_axis) for r in runs]
            found.append(band(prefix + label, points))
    return found


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
