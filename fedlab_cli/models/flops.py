"""Forward MACs per conv/linear layer: the basis of FLOP figures (benchmarks, LIPS's cost)."""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from fedlab_cli.models.roles import is_layer


def layer_macs(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of each conv/linear layer (or declared layer with a ``weight``,
    such as FedPM's masked ones) for one input sample.

    Runs a copy of the model on the meta device: no memory, no random numbers drawn. A layer's
    MACs are its output positions times the weights that feed one output.
    """
    probe = copy.deepcopy(model).to("meta").eval()
    macs: dict[str, int] = {}

    def record(name: str, module: nn.Module, inputs: Any, output: Tensor) -> None:
        macs[name] = output[0].numel() * module.weight[0].numel()

    for name, module in probe.named_modules():
        if is_layer(module):
            module.register_forward_hook(partial(record, name))
    with torch.no_grad():
        probe(torch.empty(1, *image_shape, device="meta"))
    return macs


def forward_flops(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x MACs) of one sample's forward pass through the conv and linear layers."""
    return 2 * sum(layer_macs(model, image_shape).values())
