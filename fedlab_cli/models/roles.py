"""Parameter roles: methods pick tensors by what they are, never by name patterns.

Every parameter and buffer of a model gets a role: where its layer sits (first, middle, last) and
what kind of tensor it is (weight, bias, batch-norm affine, batch-norm statistic). The "layers"
are the convolutions and linear maps in registration order; the first of them is the stem, the
last linear map is the head, every other one (1x1 shortcuts included) is a middle layer, as
REFERENCE.md §3 defines them. A BatchNorm belongs to the layer it normalises (the one before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from torch import nn


class Position(str, Enum):
    FIRST = "first"
    MIDDLE = "middle"
    LAST = "last"


class Kind(str, Enum):
    WEIGHT = "weight"
    BIAS = "bias"
    BN = "bn"
    BN_STAT = "bn_stat"


@dataclass(frozen=True)
class TensorRole:
    """Where a tensor sits in the network and what it is."""

    position: Position
    kind: Kind
    layer: str  # the module name of the conv/linear layer it belongs to

    @property
    def is_head(self) -> bool:
        """The classifier's weight and bias (FedRep's head)."""
        return self.position is Position.LAST and self.kind in (Kind.WEIGHT, Kind.BIAS)


_LAYER_TYPES = (nn.Conv2d, nn.Linear)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def assign_roles(model: nn.Module) -> dict[str, TensorRole]:
    """Role of every named parameter and buffer of ``model``, in ``state_dict`` order."""
    layers = [name for name, m in model.named_modules() if isinstance(m, _LAYER_TYPES)]
    if not layers or not isinstance(model.get_submodule(layers[-1]), nn.Linear):
        raise ValueError("a model needs at least one layer and must end with a linear head")
    position = {name: Position.MIDDLE for name in layers}
    position[layers[0]] = Position.FIRST
    position[layers[-1]] = Position.LAST

    roles: dict[str, TensorRole] = {}
    owner = layers[0]
    for module_name, module in model.named_modules():
        if isinstance(module, _LAYER_TYPES):
            owner = module_name
            for pname, _ in module.named_parameters(recurse=False):
                kind = Kind.WEIGHT if pname == "weight" else Kind.BIAS
                roles[_join(module_name, pname)] = TensorRole(position[owner], kind, owner)
        elif isinstance(module, _NORM_TYPES):
            for pname, _ in module.named_parameters(recurse=False):
                roles[_join(module_name, pname)] = TensorRole(position[owner], Kind.BN, owner)
            for bname, _ in module.named_buffers(recurse=False):
                roles[_join(module_name, bname)] = TensorRole(position[owner], Kind.BN_STAT, owner)
        else:
            stray = list(module.named_parameters(recurse=False))
            if stray:
                raise ValueError(f"module {module_name!r} has parameters of no known role")
    missing = set(model.state_dict()) - set(roles)
    if missing:
        raise ValueError(f"tensors without a role: {sorted(missing)}")
    return {name: roles[name] for name in model.state_dict()}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
