"""Model architectures by name, each with the parameter roles methods select tensors by.

Models come from the ``fedlab.models`` entry-point group, built-in ones included (registered in
fedlab's own pyproject.toml), so a third-party package adds an architecture without touching
fedlab. An entry point names a factory ``factory(num_classes, in_channels) -> nn.Module``; its
docstring's first line is the description ``fedlab list models`` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

from torch import nn

from fedlab_cli.errors import FedlabError
from fedlab_cli.models.roles import Kind, Position, TensorRole, assign_roles

__all__ = [
    "GROUP",
    "Kind",
    "Position",
    "TensorRole",
    "assign_roles",
    "available_models",
    "build",
    "describe",
    "model_factory",
]

GROUP = "fedlab.models"

ModelFactory = Callable[..., nn.Module]


def available_models() -> dict[str, metadata.EntryPoint]:
    """Entry points of every installed model, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def known_models() -> str:
    return ", ".join(sorted(available_models())) or "none installed — run `pip install -e .`"


def model_factory(name: str) -> ModelFactory:
    """The factory registered under ``name``, or a one-line error naming the known ones."""
    entry_points = available_models()
    if name not in entry_points:
        raise FedlabError(f"model.name: unknown model {name!r} (known: {known_models()})")
    try:
        factory = entry_points[name].load()
    except Exception as err:  # a broken plugin is the plugin's fault, said in one line
        raise FedlabError(f"model.name: entry point {name!r} cannot be loaded: {err}") from None
    if not callable(factory):
        raise FedlabError(f"model.name: entry point {name!r} is not a model factory")
    return factory


def describe(name: str) -> str:
    """The first line of the factory's docstring."""
    doc = (model_factory(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def build(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model; its roles are attached as ``model.roles`` (state_dict order)."""
    model = model_factory(name)(num_classes=num_classes, in_channels=in_channels)
    if not isinstance(model, nn.Module):
        raise FedlabError(f"model.name: factory {name!r} did not return a torch.nn.Module")
    model.roles = assign_roles(model)
    return model
