"""Field types for the run spec (and for method parameters): strict, finite and bounded.

YAML turns ``true`` into a bool, ``5.0`` into a float and ``.inf`` into infinity, and pydantic's
lax mode would then run ``local_epochs: true`` as 1 epoch or start training at ``lr: .inf``.
These types refuse a value of the wrong kind instead of converting it: no bool where a number
is meant, no float where a count is meant (an int where a float is meant is fine), no infinite
or NaN float, and integers bounded so that numpy and torch can hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AllowInfNan, BeforeValidator, Field, Strict

MAX_COUNT = 2**31 - 1
"""Largest count or round index: beyond it numpy/torch index arithmetic overflows."""

MAX_SEED = 2**32 - 1
"""numpy's ``RandomState`` (the reference partition's generator) takes seeds 0 .. 2^32 - 1."""

MIN_ALPHA = 0.01
"""Smallest Dirichlet concentration. numpy's legacy Dirichlet (the reference partition) draws a
class share as ``U ** (1 / alpha)``, which underflows to 0 for small alpha; when every share of a
client underflows the row is 0 / 0 = NaN ("cannot convert float NaN to integer"). Measured on
100 000 clients: no NaN row at alpha = 0.01 for 2, 10, 100 or 200 classes; at 0.001 there are
NaN rows with 10 classes, at 0.0001 even with 100. The risk is largest with *few* classes:
about ``exp(-744 * alpha * classes)`` per client, 5e-33 for 10 classes (the fewest any dataset
has) at this minimum."""

MAX_ALPHA = 1e6
"""Largest concentration: beyond it the split is uniform anyway, and the gamma draws of a
large class count approach float overflow."""

StrictBool = Annotated[bool, Strict()]
"""``true``/``false`` only: not 1, not ``"yes"``."""

StrictInt = Annotated[int, Strict(), Field(ge=-MAX_COUNT, le=MAX_COUNT)]
"""An integer (not a bool, not ``5.0``), within numpy's index range."""

StrictCount = Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)]
"""A positive count: clients, rounds, epochs, samples, a batch size."""

NonNegativeCount = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]
"""A count where 0 has a meaning (e.g. ``keep_checkpoints: 0`` keeps all)."""

Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
"""A seed numpy's ``RandomState`` accepts."""

FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number; an int is taken as a float, a bool or a numeric string is not."""


def _path_text(value: Any) -> Any:
    """Paths come from YAML as text: refuse numbers, empty text and NUL bytes up front, before
    ``mkdir`` or ``open`` fail on them mid-run."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("expected a path as text")
    if not value.strip():
        raise ValueError("empty path")
    if "\x00" in value:
        raise ValueError("path contains a NUL byte")
    return value


NonEmptyText = Annotated[str, Strict(), Field(min_length=1, max_length=128)]
"""A short name given as text (a W&B project, group or run name)."""

SpecPath = Annotated[Path, BeforeValidator(_path_text)]
"""A non-empty filesystem path given as text."""


class FieldProblem(ValueError):
    """A rule across fields is broken. Raised inside a model validator, where pydantic's error
    location is the whole model, it carries the field to name in the one-line message."""

    def __init__(self, field: str, problem: str, value: object) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.value = value
