"""Methods come from the ``fedlab.methods`` entry-point group, built-in ones included.

A third-party package adds a method by declaring an entry point in that group; fedlab needs
no change. Names are the entry-point names.
"""

from __future__ import annotations

from importlib import metadata

from fedlab_cli.engine.method import Method
from fedlab_cli.errors import FedlabError

GROUP = "fedlab.methods"


def available_methods() -> dict[str, metadata.EntryPoint]:
    """Entry points of every installed method, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def load_method(name: str) -> type[Method]:
    """The method class registered under ``name``."""
    entry_points = available_methods()
    if name not in entry_points:
        known = ", ".join(sorted(entry_points)) or "none installed — run `pip install -e .`"
        raise FedlabError(f"method.name: unknown method {name!r} (known: {known})")
    cls = entry_points[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise FedlabError(f"method.name: entry point {name!r} is not a fedlab Method subclass")
    return cls
