"""The run directory: everything a result needs to be trusted and redone.

Layout: ``spec.yaml`` (resolved), ``partition.json``, ``metrics.jsonl`` (one line per round),
``inertia.csv`` (per round and layer), ``checkpoints/round_NNNN.pt``, ``summary.json``, and
``manifest.json``: size and sha256 of every whole file (spec, partition, each checkpoint,
summary), recorded just before the file is renamed into place, so the manifest never lags behind
what is on disk.

Whole-file writes go to a temporary file and are renamed into place, so a crash never leaves a
half-written file; a run is complete only once ``summary.json`` exists. The two logs are
appended a line at a time; reading them never drops an intact record because an earlier line is
damaged: the reader returns the intact records and names the damaged lines.

Integrity building blocks (``verify``, ``damage``, ``latest_intact_checkpoint``,
``read_metrics``, ``read_inertia``) say what is damaged; deciding what to do about it (resume
from an older checkpoint, rebuild metrics, refuse) belongs to the session.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from fedlab_cli.atomic import (
    DISK_FULL,
    WriteFailedError,
    Written,
    atomic_torch_save,
    atomic_write_text,
    human_bytes,
)
from fedlab_cli.errors import FedlabError

SPEC, PARTITION, METRICS, SUMMARY, CHECKPOINTS = (
    "spec.yaml",
    "partition.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
)
INERTIA = "inertia.csv"
SHARDS = "shards"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
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
_INERTIA_NUMBERS = INERTIA_COLUMNS[4:]
_CHECKPOINT_NAME = re.compile(r"^round_(\d+)\.pt$")
_ANY_ROUND = re.compile(r"^round_(\d+)\.")


# ---------------------------------------------------------------- what reading found


@dataclass(frozen=True)
class Damage:
    """One damaged, edited or missing file of a run dir (``file`` is relative to it)."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


class RunDirDamagedError(FedlabError):
    """A run dir file is damaged or was edited: one line naming the first such file."""

    def __init__(self, run_dir: Path, damage: Damage) -> None:
        super().__init__(f"{run_dir}: {damage}")
        self.damage = damage


class RunDirNotice(UserWarning):
    """Something in a run dir was damaged and has been skipped; the CLI shows it as one line."""


@dataclass(frozen=True)
class IntactCheckpoint:
    """The newest checkpoint that loads and matches the manifest, and the newer damaged ones."""

    path: Path
    round: int
    state: dict
    damaged_newer: list[Damage] = field(default_factory=list)


@dataclass(frozen=True)
class LogRead:
    """The intact records of an append-only log, and where it is damaged.

    ``damaged_lines`` are 1-based line numbers of complete lines that are not valid records
    (garbage, a wrong type, an edited line); ``torn_tail`` is True when the last line lacks its
    newline: a write cut short by a crash, expected and harmless, never read as a record.
    """

    file: str
    records: list[dict]
    damaged_lines: list[int]
    torn_tail: bool = False
    reasons: dict[int, str] = field(default_factory=dict)

    @property
    def first_damage(self) -> Damage | None:
        if not self.damaged_lines:
            return None
        line = self.damaged_lines[0]
        more = len(self.damaged_lines) - 1
        also = f" (and {more} more damaged lines)" if more else ""
        return Damage(self.file, f"line {line} is damaged: {self.reasons.get(line, '?')}{also}")

    def missing_rounds(self, through: int) -> list[int]:
        """Rounds 0..``through`` with no record (a damaged line lost them)."""
        present = {int(r["round"]) for r in self.records}
        return [t for t in range(through + 1) if t not in present]


# ---------------------------------------------------------------- the run directory


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
        self._write_text(PARTITION, json.dumps(partition))
        self._write_text(SPEC, spec_yaml)  # last: a dir with spec.yaml is a run

    # ------------------------------------------------------------ metrics.jsonl

    def append_metrics(self, record: dict) -> None:
        """One JSON line per round, written with one call and flushed to disk."""
        _append(self.path / METRICS, json.dumps(record) + "\n")

    def read_metrics(self) -> LogRead:
        """Every intact line of ``metrics.jsonl`` (a JSON object with an integer ``round``),
        and the numbers of the damaged ones; later good lines are never dropped."""
        return _read_log(self.path / METRICS, METRICS, _metrics_record)

    def metrics(self) -> list[dict]:
        """The intact metric records, in file order (damaged lines skipped, not fatal)."""
        return self.read_metrics().records

    def keep_metrics_through(self, last_round: int) -> list[dict]:
        """Drop metric lines after ``last_round`` (rounds redone on resume); returns the kept.
        Damaged lines are dropped too, with a ``RunDirNotice`` naming them."""
        found = self.read_metrics()
        _notice_damage(found)
        kept = [r for r in found.records if r["round"] <= last_round]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    # ------------------------------------------------------------ inertia.csv

    def append_inertia(self, rows: list[tuple]) -> None:
        """Rows in ``INERTIA_COLUMNS`` order, appended with one flushed write; NaN is empty."""
        path = self.path / INERTIA
        text = _csv_text(rows, header=not path.is_file() or path.stat().st_size == 0)
        _append(path, text)

    def read_inertia(self) -> LogRead:
        """Every intact row of ``inertia.csv`` as a dict of strings, and the damaged lines
        (a bad header, a wrong field count, a non-integer round, a non-numeric value)."""
        return _read_log(self.path / INERTIA, INERTIA, _inertia_record, header=True)

    def inertia_rows(self) -> list[dict[str, str]]:
        """The intact rows of ``inertia.csv``; a line cut short by a crash is not one."""
        return self.read_inertia().records

    def keep_inertia_through(self, last_round: int) -> None:
        """Drop inertia rows after ``last_round`` (rounds redone on resume), and damaged ones
        with a ``RunDirNotice``."""
        found = self.read_inertia()
        _notice_damage(found)
        kept = [r for r in found.records if int(r["round"]) <= last_round]
        rows = [tuple(r[c] for c in INERTIA_COLUMNS) for r in kept]
        atomic_write_text(self.path / INERTIA, _csv_text(rows, header=True))

    # ------------------------------------------------------------ checkpoints

    def checkpoint_path(self, round_index: int) -> Path:
        return self.path / CHECKPOINTS / f"round_{round_index:04d}.pt"

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest round first (by number: round_10000 follows round_9999)."""
        found = [p for p in (self.path / CHECKPOINTS).glob("round_*.pt") if _round_of(p) >= 0]
        return sorted(found, key=_round_of)

    def save_checkpoint(self, round_index: int, state: dict, keep: int) -> None:
        path = self.checkpoint_path(round_index)
        atomic_torch_save(state, path, digest=True, before_replace=self._recorder(path))
        if keep:
            old = self.checkpoints()[:-keep]
            for stale in old:
                stale.unlink()
            if old:
                self._forget([self._name(p) for p in old])
                self.prune_shards()

    def shard_path(self, name: str) -> Path:
        """Where a checkpoint's client slice lives (``fedlab_cli/engine/checkpoint.py``)."""
        return self.path / CHECKPOINTS / SHARDS / name

    def record_shards(self, names: list[str]) -> None:
        """Enter client slices written by every process in the manifest (rank 0 alone writes
        it, after they are all on disk), so damage to a slice is found like any other file."""
        files = dict(self.manifest())
        for name in names:
            files[self._name(self.shard_path(name))] = _digest(self.shard_path(name))
        self._save_manifest(files)

    def prune_shards(self) -> None:
        """Remove (and forget) the slices of rounds whose checkpoint is gone."""
        kept = {path.stem for path in self.checkpoints()}
        stale = [
            p
            for p in (self.path / CHECKPOINTS / SHARDS).glob("round_*.pt")
            if p.name.split(".")[0] not in kept
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            self._forget([self._name(p) for p in stale])

    def latest_checkpoint(self) -> dict | None:
        """The newest checkpoint's state; a damaged one is a one-line error naming it (and the
        newest intact one), never a torch traceback."""
        found = self.checkpoints()
        if not found:
            return None
        loaded = self._checkpoint_damage(found[-1])
        if isinstance(loaded, Damage):
            intact = self.latest_intact_checkpoint()
            hint = f"; newest intact: {self._name(intact.path)}" if intact else ""
            raise RunDirDamagedError(self.path, Damage(loaded.file, loaded.problem + hint))
        return loaded

    def latest_intact_checkpoint(self, before: int | None = None) -> IntactCheckpoint | None:
        """The newest checkpoint (of a round before ``before``, if given) that matches its
        manifest entry and loads, with the newer ones that did not; None when none is."""
        entries = self._manifest_or_empty()
        names = {self._name(p) for p in self.checkpoints()}
        names |= {n for n in entries if n.startswith(f"{CHECKPOINTS}/")}
        candidates = sorted(
            (
                n
                for n in names
                if _round_of(Path(n)) >= 0 and (before is None or _round_of(Path(n)) < before)
            ),
            key=lambda n: _round_of(Path(n)),
        )
        damaged: list[Damage] = []
        for name in reversed(candidates):
            result = self._checkpoint_damage(self.path / name)
            if isinstance(result, Damage):
                damaged.append(result)
                continue
            return IntactCheckpoint(self.path / name, _round_of(Path(name)), result, damaged)
        return None

    def checkpoint_damage(self) -> list[Damage]:
        """Every checkpoint that is missing, differs from its manifest entry or does not load."""
        entries = self._manifest_or_empty()
        names = {self._name(p) for p in self.checkpoints()}
        names |= {n for n in entries if n.startswith(f"{CHECKPOINTS}/")}
        names = {n for n in names if _round_of(Path(n)) >= 0}  # slices: with their round
        found = [self._checkpoint_damage(self.path / n) for n in sorted(names)]
        return [d for d in found if isinstance(d, Damage)]

    def _checkpoint_damage(self, path: Path) -> Damage | dict:
        """The loaded state of an intact checkpoint, or what is wrong with it."""
        name = self._name(path)
        damage = self._file_damage(name, required=True)
        if damage is not None:
            return damage
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, garbage, empty file, wrong pickle...
            return Damage(name, f"does not load ({_one_line(err)})")
        if not isinstance(state, dict):
            return Damage(name, f"holds a {type(state).__name__}, not a checkpoint")
        for shard in state.get("shards", []):  # a checkpoint is only as intact as its slices
            damage = self._file_damage(self._name(self.shard_path(shard)), required=True)
            if damage is not None:
                return Damage(damage.file, f"{damage.problem} (a slice of {name})")
        return state

    # ------------------------------------------------------------ summary.json

    def write_summary(self, summary: dict) -> None:
        self._write_text(SUMMARY, json.dumps(summary, indent=2) + "\n")

    def summary(self) -> dict:
        return json.loads((self.path / SUMMARY).read_text())

    # ------------------------------------------------------------ manifest and verification

    @property
    def has_manifest(self) -> bool:
        """False for run dirs made before manifests existed: their files cannot be checked
        against recorded hashes, only for being readable."""
        return (self.path / MANIFEST).is_file()

    def manifest(self) -> dict[str, dict[str, Any]]:
        """``{relative name: {"size": bytes, "sha256": hex}}``; ``{}`` when there is none."""
        path = self.path / MANIFEST
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            files = data["files"]
            if data.get("version") != MANIFEST_VERSION or not isinstance(files, dict):
                raise ValueError("unknown layout")
            for entry in files.values():
                if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
                    raise ValueError("entry without size and sha256")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise RunDirDamagedError(
                self.path, Damage(MANIFEST, f"unreadable ({_one_line(err)})")
            ) from None
        return files

    def write_manifest(self) -> None:
        """Record the current whole files (spec, partition, checkpoints, summary) as they are:
        adopts a run dir made before manifests, or one whose files were restored by hand."""
        names = [n for n in (SPEC, PARTITION, SUMMARY) if (self.path / n).is_file()]
        names += [self._name(p) for p in self.checkpoints()]
        files = {name: _digest(self.path / name) for name in names}
        self._save_manifest(files)

    def damage(self, checkpoints: bool = True) -> list[Damage]:
        """Every damaged, edited or missing file, in the order a resume needs them: manifest,
        spec.yaml, partition.json, summary.json, then checkpoints oldest first."""
        try:
            self.manifest()
        except RunDirDamagedError as err:
            return [err.damage]
        found = [
            d
            for d in (
                self._file_damage(SPEC, required=True) or _spec_damage(self.path / SPEC),
                self._file_damage(PARTITION, required=True)
                or _partition_damage(self.path / PARTITION),
                self._file_damage(SUMMARY, required=False),
            )
            if d is not None
        ]
        if checkpoints:
            found += self.checkpoint_damage()
        return found

    def verify(self, checkpoints: bool = False) -> None:
        """Raise ``RunDirDamagedError`` naming the first damaged or edited file (checkpoints
        only when asked: an older intact one can stand in for a damaged newest one)."""
        found = self.damage(checkpoints=checkpoints)
        if found:
            raise RunDirDamagedError(self.path, found[0])

    def _file_damage(self, name: str, required: bool) -> Damage | None:
        """How ``name`` differs from its manifest entry (None: matches, or nothing recorded)."""
        path = self.path / name
        entries = self._manifest_or_empty()
        entry = entries.get(name)
        if not path.is_file():
            if entry is not None:
                return Damage(name, f"is missing ({MANIFEST} lists it)")
            return Damage(name, "is missing") if required and name in (SPEC, PARTITION) else None
        if entry is None:
            if entries and name in (SPEC, PARTITION):
                return Damage(name, f"is not recorded in {MANIFEST}")
            return None
        size = path.stat().st_size
        if size != entry["size"]:
            cut = "truncated" if size < entry["size"] else "grown"
            return Damage(
                name,
                f"is {size} bytes, {MANIFEST} recorded {entry['size']} ({cut} or edited "
                "after it was written)",
            )
        if _digest(path)["sha256"] != entry["sha256"]:
            return Damage(name, f"content differs from {MANIFEST} (edited or damaged)")
        return None

    def _manifest_or_empty(self) -> dict[str, dict[str, Any]]:
        try:
            return self.manifest()
        except RunDirDamagedError:
            return {}

    def _write_text(self, name: str, text: str) -> None:
        atomic_write_text(
            self.path / name, text, digest=True, before_replace=self._recorder(self.path / name)
        )

    def _recorder(self, path: Path) -> Callable[[Written], None]:
        name = self._name(path)

        def record(written: Written) -> None:
            files = dict(self.manifest())
            files[name] = {"size": written.size, "sha256": written.sha256}
            self._save_manifest(files)

        return record

    def _forget(self, names: list[str]) -> None:
        files = {k: v for k, v in self.manifest().items() if k not in names}
        self._save_manifest(files)

    def _save_manifest(self, files: dict[str, dict[str, Any]]) -> None:
        ordered = dict(sorted(files.items(), key=lambda kv: _manifest_order(kv[0])))
        text = json.dumps({"version": MANIFEST_VERSION, "files": ordered}, indent=2) + "\n"
        atomic_write_text(self.path / MANIFEST, text)

    def _name(self, path: Path) -> str:
        return Path(path).relative_to(self.path).as_posix()


# ---------------------------------------------------------------- reading the logs


def _read_log(path: Path, name: str, parse: Callable[[str], dict], header: bool = False) -> LogRead:
    """Split a log into intact records and damaged line numbers (see ``LogRead``)."""
    if not path.is_file():
        return LogRead(name, [], [])
    raw = path.read_bytes()
    *lines, tail = raw.split(b"\n")
    torn = tail != b""  # every record ends with a newline: an unterminated last line was cut
    # short by a crash and is never read, even where what is left parses (``0.79`` -> ``0``)
    records: list[dict] = []
    damaged: list[int] = []
    reasons: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
            if header and number == 1:
                if next(csv.reader([text]), None) != list(INERTIA_COLUMNS):
                    raise ValueError("not the inertia.csv header")
                continue
            records.append(parse(text))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as err:
            damaged.append(number)
            reasons[number] = _one_line(err)
    return LogRead(name, records, damaged, torn, reasons)


def _metrics_record(text: str) -> dict:
    record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    if type(record.get("round")) is not int or record["round"] < 0:
        raise ValueError("no integer round")
    return record


def _inertia_record(text: str) -> dict[str, str]:
    cells = next(csv.reader([text]), [])
    if len(cells) != len(INERTIA_COLUMNS):
        raise ValueError(f"{len(cells)} fields, expected {len(INERTIA_COLUMNS)}")
    row = dict(zip(INERTIA_COLUMNS, cells, strict=True))
    for key in ("round", "ref_round"):
        if not row[key].isdigit():
            raise ValueError(f"{key} {row[key][:20]!r} is not a round number")
    if not row["layer"] or not row["role"]:
        raise ValueError("empty layer or role")
    for key in _INERTIA_NUMBERS:
        if row[key]:
            float(row[key])  # raises ValueError for non-numeric text
    return row


def _notice_damage(found: LogRead) -> None:
    damage = found.first_damage
    if damage is not None:
        warnings.warn(
            RunDirNotice(f"{damage}; it is dropped, later intact lines are kept"), stacklevel=3
        )


# ---------------------------------------------------------------- content checks


def _spec_damage(path: Path) -> Damage | None:
    """spec.yaml must be a YAML mapping (the check a run dir without manifest gets)."""
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return Damage(SPEC, f"is not readable YAML ({_one_line(err)})")
    if not isinstance(data, dict):
        return Damage(SPEC, "does not hold a mapping")
    return None


def _partition_damage(path: Path) -> Damage | None:
    """partition.json must list ``num_clients`` clients of integer train and test positions."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        clients = data["clients"]
        if data["num_clients"] != len(clients):
            return Damage(
                PARTITION, f"lists {len(clients)} clients, num_clients says {data['num_clients']}"
            )
        for index, client in enumerate(clients):
            for pool in ("train", "test"):
                if not all(type(v) is int and v >= 0 for v in client[pool]):
                    return Damage(PARTITION, f"client {index} has a non-integer {pool} position")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return Damage(PARTITION, f"is not a readable partition ({_one_line(err)})")
    return None


# ---------------------------------------------------------------- helpers


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha.hexdigest()}


def _round_of(path: Path) -> int:
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else -1


def _manifest_order(name: str) -> tuple[int, int, str]:
    fixed = {SPEC: 0, PARTITION: 1, SUMMARY: 3}
    if name in fixed:
        return (fixed[name], 0, name)
    found = _ANY_ROUND.match(Path(name).name)  # a round's slices sort with its checkpoint
    return (2, int(found.group(1)) if found else -1, name)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:120]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


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
    """Append with one write, flushed to disk: a crash loses at most this (partial) line, and
    a full disk is one line naming the log (the earlier lines are intact)."""
    try:
        with open(path, "a", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        if err.errno in DISK_FULL:
            raise WriteFailedError(
                f"{path}: disk full while appending {human_bytes(len(text.encode()))}; the "
                "earlier lines are intact — free some space and resume"
            ) from None
        raise WriteFailedError(f"{path}: cannot append ({err.strerror})") from None
