"""Read the history of an offline W&B run file (``run-<id>.wandb``) without W&B's servers.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with a
4-byte checksum, a 2-byte little-endian length and a 1-byte type (full, first, middle, last);
each record is a ``wandb.proto`` ``Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER, RECORD_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", data[:7]
    found: list[bytes] = []
    pending = b""
    pos = HEADER
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # block trailer: padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += RECORD_HEADER + length
        if kind == FULL:
            found.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            found.append(pending + chunk)
    return found


def history(path: Path) -> list[dict]:
    """Every ``history`` record as ``{key: value}`` with ``_step``."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for raw in records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def config(path: Path) -> dict:
    """The run's config: the one its ``run`` record starts with, then ``config`` updates."""
    from wandb.proto import wandb_internal_pb2 as pb

    merged: dict = {}
    for raw in records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            for item in updates:
                merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged


def run_info(path: Path) -> dict:
    """Project, group and display name from the file's ``run`` record."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {"project": run.project, "group": run.run_group, "name": run.display_name}
    raise AssertionError("no run record")
