"""Parameter roles: methods pick tensors by what they are, never by name patterns.

Every parameter and buffer of a model gets a role: where its layer sits (first, middle, last) and
what kind of tensor it is. The "layers" are the convolutions and linear maps (and modules that
declare themselves layers) in registration order; the first of them is the stem, the last is the
head, every other one (1x1 shortcuts included) is a middle layer, as REFERENCE.md §3 defines
them. A normalisation layer belongs to the layer it normalises (the one before it).

Kinds are inferred only where the meaning is certain: a conv/linear layer's ``weight`` and
``bias``, BatchNorm's affine parameters and statistics, GroupNorm's and LayerNorm's affine
parameters. A module can declare the kinds of its own tensors with a ``fedlab_roles()`` method
returning ``{local name: Kind}`` (and ``fedlab_layer = True`` to count as a layer). Anything
else is an error naming the tensor: a parameter the rules do not understand never gets a
default role silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from torch import nn

from fedlab_cli.errors import FedlabError


class Position(str, Enum):
    FIRST = "first"
    MIDDLE = "middle"
    LAST = "last"


class Kind(str, Enum):
    WEIGHT = "weight"  # a conv/linear weight
    BIAS = "bias"
    BN = "bn"  # BatchNorm affine parameters
    BN_STAT = "bn_stat"  # BatchNorm running statistics and batch counter
    NORM = "norm"  # GroupNorm / LayerNorm affine parameters (no statistics)
    SCORE = "score"  # trainable per-weight scores of a masked layer (FedPM)
    FROZEN = "frozen"  # fixed weights never trained nor communicated (FedPM's random network)


@dataclass(frozen=True)
class TensorRole:
    """Where a tensor sits in the network and what it is."""

    position: Position
    kind: Kind
    layer: str  # the module name of the conv/linear layer it belongs to

    @property
    def is_head(self) -> bool:
        """The classifier's tensors (FedRep's head): the last layer's weight, bias or scores."""
        return self.position is Position.LAST and self.kind in (Kind.WEIGHT, Kind.BIAS, Kind.SCORE)


_LAYER_TYPES = (nn.Conv2d, nn.Linear)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AFFINE_NORMS = (nn.GroupNorm, nn.LayerNorm)


def is_layer(module: nn.Module) -> bool:
    return isinstance(module, _LAYER_TYPES) or bool(getattr(module, "fedlab_layer", False))


def assign_roles(model: nn.Module) -> dict[str, TensorRole]:
    """Role of every named parameter and buffer of ``model``, in ``state_dict`` order."""
    layers = [name for name, m in model.named_modules() if is_layer(m)]
    if not layers:
        raise FedlabError(f"model: {type(model).__name__} has no conv or linear layer")
    position = {name: Position.MIDDLE for name in layers}
    position[layers[0]] = Position.FIRST
    position[layers[-1]] = Position.LAST

    roles: dict[str, TensorRole] = {}
    owner = layers[0]
    for module_name, module in model.named_modules():
        if is_layer(module):
            owner = module_name
        local = [n for n, _ in module.named_parameters(recurse=False)]
        local += [n for n, _ in module.named_buffers(recurse=False)]
        if not local:
            continue
        declared = module.fedlab_roles() if hasattr(module, "fedlab_roles") else {}
        for name in local:
            kind = declared.get(name) or _inferred_kind(module, name)
            full = _join(module_name, name)
            if kind is None:
                raise FedlabError(
                    f"model: tensor {full!r} ({type(module).__name__}.{name}) has no known role; "
                    "declare it with a fedlab_roles() method on its module"
                )
            roles[full] = TensorRole(position[owner], Kind(kind), owner)
    state = model.state_dict()
    missing = [n for n in state if n not in roles]
    if missing:
        raise FedlabError(f"model: tensor {missing[0]!r} has no role")
    return {name: roles[name] for name in state}


def _inferred_kind(module: nn.Module, name: str) -> Kind | None:
    """The kind the rules know for certain, else None."""
    is_param = name in dict(module.named_parameters(recurse=False))
    if isinstance(module, _LAYER_TYPES) and is_param:
        return {"weight": Kind.WEIGHT, "bias": Kind.BIAS}.get(name)
    if isinstance(module, _BATCH_NORMS):
        if is_param:
            return Kind.BN if name in ("weight", "bias") else None
        known = ("running_mean", "running_var", "num_batches_tracked")
        return Kind.BN_STAT if name in known else None
    if isinstance(module, _AFFINE_NORMS) and is_param:
        return Kind.NORM if name in ("weight", "bias") else None
    return None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
