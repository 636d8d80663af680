"""Plan a sweep: grid points x seeds, each run under ``<out>/runs/<hash of its spec>/``.

The hash covers the resolved spec except where files go (``output.*``, ``data.root``,
``data.download``), so rerunning the same sweep finds its runs again whatever the order of the
grid, and two grid points that resolve to the same spec share one run. ``sweep.json`` lists the
runs with their grid points (``fedlab plot`` groups by it); ``failures.json`` records runs that
failed, which a rerun skips unless asked to retry them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.data.synthetic import VARIANTS, synthetic_name
from fedlab_cli.engine.compare import IGNORED_WHEN_REUSING, _flatten, run_output
from fedlab_cli.engine.grid import GridPoint
from fedlab_cli.engine.rundir import SPEC, RunDir
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import ResolvedSpec, apply_overrides, resolve
from fedlab_cli.tracking import check_available

Status = Literal["done", "resume", "start", "failed"]
RUNS, INDEX, FAILURES = "runs", "sweep.json", "failures.json"
HASH_CHARS = 12


@dataclass(frozen=True)
class SweepRun:
    """One (grid point, seed) of a sweep, its resolved spec and what is left to do."""

    point: GridPoint
    seed: int
    path: Path
    resolved: ResolvedSpec
    status: Status

    @property
    def label(self) -> str:
        return self.point.label

    @property
    def name(self) -> str:
        return f"{self.label} · seed {self.seed}"


def spec_hash(resolved: ResolvedSpec) -> str:
    """A short sha256 of what decides the numbers of a run."""
    flat = _flatten(resolved.to_dict())
    flat = {k: v for k, v in flat.items() if not k.startswith(IGNORED_WHEN_REUSING)}
    text = json.dumps(flat, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def synthetic_stand_in(raw: dict[str, Any]) -> dict[str, Any]:
    """The spec on the synthetic stand-in of its dataset (same shapes and pools)."""
    data = raw.get("data")
    if isinstance(data, dict) and synthetic_name(str(data.get("dataset"))) in VARIANTS:
        return {**raw, "data": {**data, "dataset": synthetic_name(data["dataset"])}}
    return raw


def plan_sweep(
    base: dict[str, Any],
    grid: list[GridPoint],
    seeds: list[int],
    out: Path,
    after: list[str] | None = None,
    retry_failed: bool = False,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[SweepRun]:
    """Every run, validated, with its status; writes nothing. Precedence: the base spec, then
    the grid point, then ``after`` (shortcut flags and ``--set``), then ``transform``."""
    if not seeds:
        raise FedlabError("--seeds: give at least one seed")
    failures = read_failures(out)
    plan: list[SweepRun] = []
    for point in grid:
        raw = apply_overrides(point.apply(base), after or [])
        if transform is not None:
            raw = transform(raw)
        for seed in seeds:
            spec = {**raw, "seed": seed}
            group = f"{Path(out).name}-{point.label}"
            try:
                probe = resolve({**spec, "output": run_output(spec.get("output"), out, group)})
            except FedlabError as err:
                raise FedlabError(f"grid point {point.label}: {err}") from None
            path = Path(out) / RUNS / spec_hash(probe)
            output = probe.spec.output.model_copy(update={"dir": path})
            resolved = replace(probe, spec=probe.spec.model_copy(update={"output": output}))
            check_available(resolved.spec.output.loggers)  # before any dir or lock is made
            status = run_status(path, failures, retry_failed)
            plan.append(SweepRun(point, seed, path, resolved, status))
    return plan


def run_status(path: Path, failures: dict[str, dict], retry_failed: bool) -> Status:
    run_dir = RunDir(path)
    failed = path.name in failures or (
        run_dir.is_complete and run_dir.summary().get("status") == "diverged"
    )
    if failed:
        return "start" if retry_failed else "failed"
    if run_dir.is_complete:
        return "done"
    return "resume" if (path / SPEC).is_file() else "start"


def write_index(out: Path, plan: list[SweepRun], context: dict[str, Any]) -> None:
    runs = [
        {
            "dir": f"{RUNS}/{r.path.name}",
            "label": r.label,
            "labels": list(r.point.labels()),
            "seed": r.seed,
        }
        for r in plan
    ]
    atomic_write_text(Path(out) / INDEX, json.dumps({**context, "runs": runs}, indent=2) + "\n")


def read_failures(out: Path) -> dict[str, dict]:
    path = Path(out) / FAILURES
    return json.loads(path.read_text()) if path.is_file() else {}


def write_failures(out: Path, failures: dict[str, dict]) -> None:
    path = Path(out) / FAILURES
    if failures:
        atomic_write_text(path, json.dumps(failures, indent=2) + "\n")
    else:
        path.unlink(missing_ok=True)
