"""A sweep's grid: axes of labelled settings, whose Cartesian product gives the grid points.

An axis comes from ``--grid key=v1,v2`` (one label per value, ``key=v``) or from a sweep file's
``axes`` (named settings, e.g. the rows and columns of a paper table). Values are YAML, as with
``--set``; a ``method`` mapping replaces the whole method section (each method has its own keys).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import apply_overrides, shorten

OWNED = {"seed": "--seeds", "output.dir": "--out"}
"""Keys a sweep sets itself."""


@dataclass(frozen=True)
class Setting:
    """One value of an axis: its label and the spec keys it sets (``dotted.key`` -> value)."""

    label: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Axis:
    name: str
    settings: tuple[Setting, ...]


@dataclass(frozen=True)
class GridPoint:
    """One combination of settings, one per axis."""

    settings: tuple[Setting, ...]

    @property
    def label(self) -> str:
        return ", ".join(s.label for s in self.settings) or "base"

    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.settings)

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        data = raw
        for setting in self.settings:
            data = apply_setting(data, setting.values)
        return data


def apply_setting(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each key set; ``method`` given as a mapping replaces the section."""
    data = dict(raw)
    for key, value in values.items():
        if key == "method" and isinstance(value, dict):
            data["method"] = dict(value)
        else:
            data = apply_overrides(data, [f"{key}={_yaml(value)}"])
    return data


def _yaml(value: Any) -> str:
    import yaml

    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def parse_grid(items: list[str]) -> list[Axis]:
    """``key=v1,v2`` items as axes; a bad item is a one-line error naming it."""
    axes: list[Axis] = []
    keys = [item.partition("=")[0].strip() for item in items]
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part.strip() for part in key.split(".")):
            raise FedlabError(f"--grid: expected key=v1,v2,..., got {shorten(item)}")
        if key in OWNED:
            raise FedlabError(f"--grid {key}: a sweep sets it from {OWNED[key]}")
        values = split_values(text)
        if not values or any(not v.strip() for v in values):
            raise FedlabError(f"--grid {key}: expected comma-separated values, got {shorten(text)}")
        if len(set(values)) != len(values):
            raise FedlabError(f"--grid {key}: a value is given twice ({shorten(text)})")
        if any(a.name == key for a in axes):
            raise FedlabError(f"--grid {key}: the key is given twice")
        short = key.rsplit(".", 1)[-1]
        unique = sum(k.rsplit(".", 1)[-1] == short for k in keys) == 1
        name = short if unique else key  # method.s0=0.3 is shown as s0=0.3
        axes.append(Axis(key, tuple(Setting(f"{name}={v}", {key: v}) for v in values)))
    return axes


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets, so ``[a,b],[c]`` is two list values."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def axes_from_file(section: Any, where: str) -> list[Axis]:
    """A sweep file's ``axes``: ``{axis: {label: {key: value, ...}, ...}, ...}``."""
    if not isinstance(section, dict) or not section:
        raise FedlabError(f"{where}: expected a mapping of axes, each label -> settings")
    axes = []
    for name, settings in section.items():
        if not isinstance(settings, dict) or not settings:
            raise FedlabError(f"{where}.{name}: expected a mapping of label -> settings")
        found = []
        for label, values in settings.items():
            if not isinstance(values, dict):
                raise FedlabError(
                    f"{where}.{name}.{label}: expected a mapping of spec keys, got "
                    f"{shorten(values)}"
                )
            owned = next((k for k in values if k in OWNED), None)
            if owned is not None:
                raise FedlabError(f"{where}.{name}.{label}: {owned} is set by {OWNED[owned]}")
            found.append(Setting(str(label), dict(values)))
        axes.append(Axis(str(name), tuple(found)))
    return axes


def points(axes: list[Axis]) -> list[GridPoint]:
    """Every combination, the first axis varying slowest."""
    return [GridPoint(combo) for combo in itertools.product(*(a.settings for a in axes))]


def restrict(axes: list[Axis], items: list[str]) -> list[Axis]:
    """``--only AXIS=LABEL,LABEL``: keep those settings of that axis (e.g. one column of a
    paper table); an unknown axis or label is a one-line error naming the known ones."""
    kept = list(axes)
    for item in items:
        name, sep, text = item.partition("=")
        index = next((i for i, a in enumerate(kept) if a.name == name.strip()), None)
        if not sep or index is None:
            known = ", ".join(a.name for a in kept) or "none"
            raise FedlabError(
                f"--only: expected AXIS=LABEL,... with an axis of {known}, got {item!r}"
            )
        axis = kept[index]
        wanted = split_values(text)
        labels = [s.label for s in axis.settings]
        unknown = next((w for w in wanted if w not in labels), None)
        if unknown is not None or not wanted:
            raise FedlabError(
                f"--only {axis.name}: no setting {unknown!r} (known: {', '.join(labels)})"
            )
        kept[index] = Axis(axis.name, tuple(s for s in axis.settings if s.label in wanted))
    return kept
