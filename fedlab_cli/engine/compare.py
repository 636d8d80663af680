"""Plan and run a method comparison: one run directory per (method, seed), reused on rerun.

Every method of a comparison gets the same spec except its ``method`` section, and for a given
seed the engine derives the partition and the initial weights from ``seed`` alone, so all
methods of a seed see identical clients and start from identical weights. The compare writes
a fingerprint of each run's initial weights to ``fingerprints.json`` so that this can be
checked afterwards.

Rerunning the same comparison reuses complete runs (``summary.json``), resumes interrupted
ones from their last checkpoint, and starts the missing ones; a run dir whose stored spec
differs from what the command asks for is refused rather than silently mixed in.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.engine.federation import RoundRecord, run
from fedlab_cli.engine.registry import load_method
from fedlab_cli.engine.rundir import MANIFEST, PARTITION, SPEC, RunDir
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError, TrainingDivergedError
from fedlab_cli.spec.load import ResolvedSpec, apply_overrides, read_yaml, resolve
from fedlab_cli.tracking import check_available

Status = Literal["done", "resume", "start"]
Progress = Callable[[str, int, int], None]

FINGERPRINTS = "fingerprints.json"
SHORTCUTS = {
    "clients": "data.num_clients",
    "alpha": "data.alpha",
    "rounds": "federation.rounds",
    "samples": "data.train_per_client",
}
"""``fedlab compare`` flags and the spec keys they set."""

IGNORED_WHEN_REUSING = ("output.", "data.root", "data.download")
"""Spec keys that change neither the numbers nor the run (where files go, where data lives)."""

PER_METHOD_SECTIONS = ("method.", "training.")
_OWNED_KEYS = {
    "seed": "--seeds",
    "output.dir": "--out",
    "method": "the METHOD arguments",
    "method.name": "the METHOD arguments",
}


@dataclass(frozen=True)
class PlannedRun:
    """One (method, seed) of a comparison, its resolved spec and what is left to do."""

    method: str
    seed: int
    path: Path
    resolved: ResolvedSpec
    status: Status

    @property
    def key(self) -> str:
        return f"{self.method}/seed{self.seed}"


@dataclass(frozen=True)
class CompletedRun:
    """A finished run: its summary and the fingerprints that show what it started from."""

    method: str
    seed: int
    path: Path
    summary: dict
    init_sha256: str | None
    partition_sha256: str


class CompareEvents:
    """What a comparison reports while it works; the CLI's progress display overrides these."""

    def run_started(self, run: PlannedRun, session: RunSession) -> None:
        """A run is about to train (freshly started or resumed)."""

    def round_done(self, run: PlannedRun, record: RoundRecord) -> None:
        """A round of the current run has been logged."""

    def run_done(self, run: PlannedRun, summary: dict) -> None:
        """A run is complete (trained now, or reused as it was)."""


def run_path(out: Path, method: str, seed: int) -> Path:
    """Layout of a compare dir: ``<out>/<method>/seed<seed>/`` is a normal run dir."""
    return Path(out) / method / f"seed{seed}"


def plan_compare(
    preset: Path,
    methods: list[str],
    seeds: list[int],
    out: Path,
    shortcuts: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> list[PlannedRun]:
    """Every run of the comparison, validated, with its status; writes nothing.

    Spec precedence: ``--set`` > shortcut flags (``--clients`` ...) > preset > defaults. The
    preset's own method parameters apply only to the method the preset names.
    """
    if not methods:
        raise FedlabError("compare: give at least one method")
    twice = next((m for m in methods if methods.count(m) > 1), None)
    if twice is not None:
        raise FedlabError(f"compare: method {twice!r} is given twice")
    if not seeds:
        raise FedlabError("--seeds: give at least one seed")
    generic, unprefixed, prefixed = split_overrides(overrides or [], methods)
    flags = [f"{SHORTCUTS[k]}={v}" for k, v in (shortcuts or {}).items() if v is not None]
    raw = apply_overrides(read_yaml(preset), flags + generic)
    per_method = method_overrides(methods, unprefixed, prefixed)
    preset_method = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    plan = []
    for method in methods:
        for seed in seeds:
            path = run_path(out, method, seed)
            resolved = _resolve_run(raw, preset_method, method, per_method[method], seed, path)
            check_available(resolved.spec.output.loggers)  # before any dir or lock is made
            plan.append(PlannedRun(method, seed, path, resolved, run_status(path, resolved)))
    return plan


def split_overrides(
    overrides: list[str], methods: list[str]
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """``--set`` items: (for every run, ``method.*`` for whichever method takes it, per method).

    ``M:method.key=value`` and ``M:training.key=value`` apply to method ``M`` only: a method's
    own hyperparameters and its local optimizer (FedPM trains scores with Adam at lr 0.1, which
    would wreck FedAvg's weights). The data, model, seeds and rounds stay shared, so partitions
    and initial weights stay identical per seed.
    """
    generic: list[str] = []
    unprefixed: list[str] = []
    prefixed: dict[str, list[str]] = {m: [] for m in methods}
    for item in overrides:
        key, sep, value = item.partition("=")
        target, colon, key = (part.strip() for part in key.rpartition(":"))
        if not sep or not key:
            raise FedlabError(f"--set: expected key=value, got {item!r}")
        owner = _OWNED_KEYS.get(key)
        if owner is not None:
            raise FedlabError(f"--set {key}: a comparison sets it from {owner}")
        if colon:
            if target not in prefixed:
                raise FedlabError(
                    f"--set {target}:{key}: {target!r} is not one of the compared methods "
                    f"({', '.join(methods)})"
                )
            if not key.startswith(PER_METHOD_SECTIONS):
                raise FedlabError(
                    f"--set {target}:{key}: only method.* and training.* keys can differ "
                    "between methods; everything else is the shared protocol"
                )
            prefixed[target].append(f"{key}={value}")
        elif key.startswith("method."):
            unprefixed.append(f"{key}={value}")
        else:
            generic.append(f"{key}={value}")
    return generic, unprefixed, prefixed


def method_overrides(
    methods: list[str], unprefixed: list[str], prefixed: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Each method's ``method.*`` overrides: an unprefixed key goes to the methods whose
    ``Params`` has that field, and is an error only when no compared method has it."""
    fields = {m: set(load_method(m).Params.model_fields) for m in methods}
    chosen: dict[str, list[str]] = {m: [] for m in methods}
    for item in unprefixed:
        field = item.partition("=")[0].split(".")[1]
        takers = [m for m in methods if field in fields[m]]
        if not takers:
            known = "; ".join(f"{m}: {', '.join(sorted(fields[m])) or 'none'}" for m in methods)
            raise FedlabError(f"--set method.{field}: no compared method takes this key ({known})")
        for m in takers:
            chosen[m].append(item)
    for m in methods:
        chosen[m].extend(prefixed.get(m, []))
    return chosen


def _resolve_run(
    raw: dict,
    preset_method: dict,
    method: str,
    overrides: list[str],
    seed: int,
    path: Path,
) -> ResolvedSpec:
    """The spec of one run: the shared protocol, this method's own section, this seed."""
    spec = copy.deepcopy(raw)
    section = {"name": method}
    if preset_method.get("name") == method:
        section.update({k: v for k, v in preset_method.items() if k != "name"})
    spec["method"] = section
    spec = apply_overrides(spec, overrides)
    spec["seed"] = seed
    spec["output"] = run_output(spec.get("output"), path, f"{path.parent.parent.name}-{method}")
    try:
        return resolve(spec)
    except FedlabError as err:
        if str(err).startswith("method."):
            raise FedlabError(f"{method}: {err}") from None
        raise


def run_output(output: Any, path: Path, group: str) -> dict:
    """The ``output`` section of one planned run: its dir, and the W&B group its seeds share
    (unless the spec names one)."""
    section = dict(output) if isinstance(output, dict) else {}
    section["dir"] = str(path)
    wandb = section.get("wandb")
    if "wandb" in section and not isinstance(wandb, dict):
        return section  # let validation name the bad value
    section["wandb"] = {"group": group[-128:], **(wandb or {})}
    return section


def run_status(path: Path, resolved: ResolvedSpec) -> Status:
    """``done`` (summary.json), ``resume`` (spec.yaml, no summary) or ``start`` (nothing yet)."""
    run_dir = RunDir(path)
    if (path / SPEC).is_file():
        check_same_spec(path, resolved)
        return "done" if run_dir.is_complete else "resume"
    if path.exists() and _leftovers(path) is None:
        raise FedlabError(
            f"compare: {str(path)!r} exists but is not a run directory; move it away or use "
            "another --out"
        )
    return "start"


def check_same_spec(path: Path, resolved: ResolvedSpec) -> None:
    """Refuse a run dir made with another spec: its numbers would not belong to this table."""
    stored = _flatten(yaml.safe_load((path / SPEC).read_text()) or {})
    wanted = _flatten(resolved.to_dict())
    differing = [
        key
        for key in sorted(set(stored) | set(wanted))
        if not key.startswith(IGNORED_WHEN_REUSING) and stored.get(key) != wanted.get(key)
    ]
    if differing:
        key = differing[0]
        more = f" (and {len(differing) - 1} more keys)" if len(differing) > 1 else ""
        raise FedlabError(
            f"compare: {str(path)!r} was run with {key}={stored.get(key)!r}, this command asks "
            f"for {wanted.get(key)!r}{more}; use another --out, or remove that run dir"
        )


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _leftovers(path: Path) -> list[Path] | None:
    """Files a start killed before writing ``spec.yaml`` leaves behind; None if others exist."""
    found = list(path.iterdir()) if path.is_dir() else None
    if found is None:
        return None
    ours = [p for p in found if p.name in (PARTITION, MANIFEST) or _is_temp(p)]
    return ours if len(ours) == len(found) else None


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.suffix == ".tmp"


def execute(
    plan: list[PlannedRun],
    out: Path,
    events: CompareEvents | None = None,
    progress: Progress | None = None,
) -> list[CompletedRun]:
    """Bring every planned run to completion, one after another, in plan order.

    A finished run is read back, not redone; an interrupted one resumes. A run that diverges
    ends with ``status: diverged`` in its summary and the comparison goes on (the table names
    it); an exception (Ctrl-C) stops the comparison but loses nothing already written.
    """
    events = events or CompareEvents()
    fingerprints = read_fingerprints(out)
    completed = []
    for planned in plan:
        summary = _complete(planned, out, fingerprints, events, progress)
        events.run_done(planned, summary)
        completed.append(
            CompletedRun(
                method=planned.method,
                seed=planned.seed,
                path=planned.path,
                summary=summary,
                init_sha256=fingerprints.get(planned.key),
                partition_sha256=file_sha256(planned.path / PARTITION),
            )
        )
    return completed


def _complete(
    planned: PlannedRun,
    out: Path,
    fingerprints: dict[str, str],
    events: CompareEvents,
    progress: Progress | None,
) -> dict:
    run_dir = RunDir(planned.path)
    if run_dir.is_complete:
        return run_dir.summary()
    if (planned.path / SPEC).is_file():
        session = RunSession.resume(planned.path, progress)
    else:
        for leftover in _leftovers(planned.path) or []:
            leftover.unlink()
        session = RunSession.start(planned.resolved, planned.path, progress)
        fingerprints[planned.key] = session.federation.initial_weights_sha256()
        atomic_write_text(out / FINGERPRINTS, json.dumps(fingerprints, indent=2) + "\n")
    events.run_started(planned, session)
    try:
        run(
            session.federation,
            on_round=[session.on_round, lambda record: events.round_done(planned, record)],
        )
    except TrainingDivergedError as err:  # a result of the table, not the end of it
        return session.finish(diverged=str(err))
    return session.finish()


def read_fingerprints(out: Path) -> dict[str, str]:
    path = Path(out) / FINGERPRINTS
    return json.loads(path.read_text()) if path.is_file() else {}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
