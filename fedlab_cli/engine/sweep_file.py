"""A sweep file: a base spec, named axes and seeds (and, for a paper table, its published
numbers), so that a whole table is one command. Recognised by its top-level ``axes`` key::

    base: ../cifar10_fedbn.yaml      # a spec file, relative to this file (optional)
    spec: {federation: {rounds: 300}} # merged over the base (optional)
    axes:                             # grid points: the product of the axes
      method: {FedBN: {method: {name: fedbn}}, LIPS: {method: {name: lips, s0: 0.5}}}
      setting: {"C10 α=0.5": {data.alpha: 0.5}}
    seeds: [0, 1, 2]
    paper: {title: ..., rows: method, columns: setting, values: {FedBN: {"C10 α=0.5": 72.69±0.75}}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedlab_cli.engine.grid import Axis, axes_from_file
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import _merge, read_yaml

KEYS = {"base", "spec", "axes", "seeds", "paper"}


@dataclass(frozen=True)
class SweepFile:
    path: Path
    base: dict[str, Any]
    axes: list[Axis]
    seeds: list[int] | None
    paper: dict[str, Any] | None = field(default=None)


def is_sweep_file(raw: dict[str, Any]) -> bool:
    return "axes" in raw


def load_sweep_file(path: Path, raw: dict[str, Any]) -> SweepFile:
    """The sweep a file describes; an unknown key or a bad section is a one-line error."""
    where = repr(str(path))
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        known = ", ".join(sorted(KEYS))
        raise FedlabError(f"sweep {where}: unknown key {unknown[0]!r} (known: {known})")
    base: dict[str, Any] = {}
    if raw.get("base") is not None:
        if not isinstance(raw["base"], str):
            raise FedlabError(f"sweep {where}: base: expected a spec file path")
        base = read_yaml(Path(path).parent / raw["base"])
    inline = raw.get("spec") or {}
    if not isinstance(inline, dict):
        raise FedlabError(f"sweep {where}: spec: expected a mapping of spec keys")
    for key, value in inline.items():
        _merge(base, key, value)
    seeds = raw.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list) or not all(type(s) is int and s >= 0 for s in seeds)
    ):
        raise FedlabError(f"sweep {where}: seeds: expected a list of non-negative integers")
    paper = raw.get("paper")
    if paper is not None and not isinstance(paper, dict):
        raise FedlabError(f"sweep {where}: paper: expected a mapping")
    return SweepFile(Path(path), base, axes_from_file(raw["axes"], "axes"), seeds, paper)
