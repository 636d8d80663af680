"""From a YAML file and ``--set`` overrides to a validated spec, or one line naming what is wrong.

Precedence is CLI > file > defaults. Every failure becomes a ``FedlabError`` whose message
names the field and the bad value, so the CLI can exit 2 without a traceback.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedlab_cli.engine.method import Method, MethodParams
from fedlab_cli.engine.registry import load_method
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.budget import check_partition_fits
from fedlab_cli.spec.model import RunSpec
from fedlab_cli.spec.types import FieldProblem
from fedlab_cli.spec.yaml_text import SpecSyntaxError, parse_yaml, read_spec_text

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class ResolvedSpec:
    """A run spec whose method name is resolved to a class and whose parameters are validated."""

    spec: RunSpec
    method_cls: type[Method]
    method_params: MethodParams

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved spec, defaults included: what ``spec.yaml`` records."""
        data = self.spec.model_dump(mode="json", by_alias=True)
        data["method"] = {
            "name": self.spec.method.name,
            **self.method_params.model_dump(mode="json"),
        }
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a spec file; anything else (no file, not UTF-8 text, malformed YAML,
    anchors, duplicate keys) is a one-line error naming the file and, where known, the line."""
    path = Path(path)
    text = read_spec_text(path)
    shown = repr(str(path))
    try:
        data = parse_yaml(text)
    except SpecSyntaxError as err:
        raise FedlabError(f"spec: {shown}{err.where()}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise FedlabError(f"spec: malformed YAML in {shown}{_yaml_where(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FedlabError(f"spec: {shown} must hold a mapping, got {type(data).__name__}")
    return data


def _yaml_where(err: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` from a PyYAML error, on one line."""
    if isinstance(err, yaml.reader.ReaderError):
        return f" at character {err.position}: unacceptable character #x{err.character:04x}"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = " ".join(str(getattr(err, "problem", None) or "invalid YAML").split())
    return f"{where}: {problem}"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (values parsed as YAML).

    A mapping value merges into the mapping already there (``training={lr: 0.01}`` keeps the
    file's other training keys), as if each of its keys had been set one by one.
    """
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FedlabError(f"--set: expected key=value, got {item!r}")
        parts = [part.strip() for part in key.strip().split(".")]
        if not all(parts):
            raise FedlabError(
                f"--set: empty key part in {key.strip()!r}; keys look like training.lr"
            )
        value = _override_value(item, text)
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FedlabError(f"--set: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        _merge(node, parts[-1], value)
    return data


def _override_value(item: str, text: str) -> Any:
    """A ``--set`` value as YAML; text that is not valid YAML is taken as a plain string."""
    if not text.strip():
        return text
    try:
        return parse_yaml(text)
    except SpecSyntaxError as err:
        raise FedlabError(f"--set: {err.problem} (got {shorten(item)})") from None
    except yaml.YAMLError:
        return text


def _merge(node: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(node.get(key), dict):
        for inner_key, inner_value in value.items():
            _merge(node[key], inner_key, inner_value)
    else:
        node[key] = value


def resolve(raw: dict[str, Any]) -> ResolvedSpec:
    """Validate a raw mapping into a ``ResolvedSpec``; also check the partition fits in memory."""
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as err:
        raise FedlabError(describe_validation_error(err)) from None
    check_consistency(spec)
    method_cls = load_method(spec.method.name)
    extra = spec.method.model_extra or {}
    check_plain_values(extra, "method")
    try:  # strict: a method's Params gets the same no-bool-for-a-number rule as the spec
        params = method_cls.Params.model_validate(extra, strict=True)
    except ValidationError as err:
        raise FedlabError(describe_validation_error(err, prefix="method")) from None
    if spec.eval.global_model and not method_cls.has_global_model:
        raise FedlabError(
            f"eval.global: method {spec.method.name!r} keeps no global model (its clients' "
            "models are personal), so there is no global accuracy to record (got true)"
        )
    check_partition_fits(spec)
    return ResolvedSpec(spec=spec, method_cls=method_cls, method_params=params)


def check_consistency(spec: RunSpec) -> None:
    """Combinations of keys that are each valid alone but not together."""
    data = spec.data
    if data.partition != "dirichlet":
        for key in ("train_per_client", "test_per_client"):
            if getattr(data, key) is not None:
                raise FedlabError(
                    f"data.{key}: only the dirichlet partition takes it; {data.partition} "
                    f"splits the whole pool (got {getattr(data, key)})"
                )
    if (data.partition == "pathological") != (data.classes_per_client is not None):
        raise FedlabError(
            "data.classes_per_client: the pathological partition needs it, the others take none "
            f"(got {data.classes_per_client} with partition {data.partition})"
        )
    training = spec.training
    for key in training.unused_keys():
        raise FedlabError(
            f"training.{key}: not used by optimizer {training.optimizer!r} "
            f"(got {getattr(training, key)!r})"
        )
    if training.nesterov and training.momentum == 0:
        raise FedlabError("training.nesterov: needs training.momentum > 0 (got momentum 0)")


def check_plain_values(value: Any, field: str) -> None:
    """Every float finite and every int within int64, anywhere under ``field``: the rule for
    method parameters, whose models the spec does not own."""
    if isinstance(value, dict):
        for key, inner in value.items():
            check_plain_values(inner, f"{field}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            check_plain_values(inner, f"{field}.{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise FedlabError(f"{field}: Input should be a finite number (got {value!r})")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise FedlabError(f"{field}: integer out of range (got {shorten(value)})")


def load_spec(path: Path | None, overrides: list[str] | None = None) -> ResolvedSpec:
    """Read, override and validate a run spec."""
    raw = read_yaml(path) if path is not None else {}
    return resolve(apply_overrides(raw, overrides or []))


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as one line: ``field.path: problem (got value)``."""
    first = err.errors()[0]
    problem = (first.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):  # a rule across fields, raised by a model validator
        field = ".".join(part for part in (prefix, problem.field) if part)
        return f"{field}: {problem.problem} (got {shorten(problem.value)})"
    field = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{field}: unknown key (value {shorten(first['input'])})"
    if kind == "missing":
        return f"{field}: required but missing"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{field}: {message} (got {shorten(first['input'])})"


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a huge value cannot flood the line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {len(str(abs(value)))} digits"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
