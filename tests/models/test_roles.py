"""Roles are inferred only where certain; anything else is an error naming the tensor."""

import pytest
import torch
from torch import nn

from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind, Position, assign_roles


class ScaledConv(nn.Conv2d):
    """A conv with an extra learnable scale: no rule knows what ``gain`` is."""

    def __init__(self, *args, declare: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(1))
        self.declare = declare

    def fedlab_roles(self):
        return {"gain": Kind.NORM} if self.declare else {}


def test_an_unknown_parameter_is_an_error_naming_it():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), ScaledConv(4, 4, 3), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(
        FedlabError, match=r"tensor '1\.gain' \(ScaledConv\.gain\) has no known role"
    ):
        assign_roles(model)


def test_a_module_can_declare_its_tensors():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), ScaledConv(4, 4, 3, declare=True), nn.GroupNorm(2, 4), nn.Linear(4, 3)
    )
    roles = assign_roles(model)
    assert roles["1.gain"].kind is Kind.NORM and roles["1.gain"].layer == "1"
    assert roles["1.weight"].kind is Kind.WEIGHT and roles["1.weight"].position is Position.MIDDLE
    assert roles["2.weight"].kind is Kind.NORM  # GroupNorm affine: its own kind, not BN
    assert roles["2.bias"].kind is Kind.NORM and roles["2.bias"].layer == "1"
    assert roles["3.weight"].position is Position.LAST and roles["3.weight"].is_head


def test_an_undeclared_buffer_is_an_error():
    conv = nn.Conv2d(4, 4, 3)
    conv.register_buffer("seed_mask", torch.ones(4))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), conv, nn.Linear(4, 3))
    with pytest.raises(FedlabError, match=r"'1\.seed_mask'"):
        assign_roles(model)


def test_a_parameter_outside_any_known_module_is_an_error():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(1))

    model = nn.Sequential(nn.Conv2d(1, 4, 3), Scale(), nn.Linear(4, 3))
    with pytest.raises(FedlabError, match=r"'1\.alpha' \(Scale\.alpha\)"):
        assign_roles(model)
