"""The run spec: its schema and how files and overrides become a validated spec."""

from fedlab_cli.spec.load import ResolvedSpec, apply_overrides, load_spec, read_yaml, resolve
from fedlab_cli.spec.model import RunSpec

__all__ = ["ResolvedSpec", "RunSpec", "apply_overrides", "load_spec", "read_yaml", "resolve"]
