"""From a YAML file and ``--set`` overrides to a validated spec, or one line naming what is wrong.

Precedence is CLI > file > defaults. Every failure becomes a ``FedlabError`` whose message
names the field and the bad value, so the CLI can exit 2 without a traceback.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedlab_cli.engine.method import Method, MethodParams
from fedlab_cli.engine.registry import load_method
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.model import RunSpec


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
    """The mapping in a spec file; a missing file or malformed YAML is a one-line error."""
    if not path.is_file():
        raise FedlabError(f"spec: no such file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise FedlabError(f"spec: malformed YAML in {str(path)!r}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FedlabError(f"spec: {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (values parsed as YAML scalars)."""
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise FedlabError(f"--set: expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        node = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FedlabError(f"--set: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def resolve(raw: dict[str, Any]) -> ResolvedSpec:
    """Validate a raw mapping into a ``ResolvedSpec``."""
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError as err:
        raise FedlabError(describe_validation_error(err)) from None
    check_consistency(spec)
    method_cls = load_method(spec.method.name)
    try:
        params = method_cls.Params.model_validate(spec.method.model_extra or {})
    except ValidationError as err:
        raise FedlabError(describe_validation_error(err, prefix="method")) from None
    if spec.eval.global_model and not method_cls.has_global_model:
        raise FedlabError(
            f"eval.global: method {spec.method.name!r} keeps no global model (its clients' "
            "models are personal), so there is no global accuracy to record (got true)"
        )
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


def load_spec(path: Path | None, overrides: list[str] | None = None) -> ResolvedSpec:
    """Read, override and validate a run spec."""
    raw = read_yaml(path) if path is not None else {}
    return resolve(apply_overrides(raw, overrides or []))


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as one line: ``field.path: problem (got value)``."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{field}: unknown key (value {first['input']!r})"
    if kind == "missing":
        return f"{field}: required but missing"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{field}: {message} (got {first['input']!r})"
