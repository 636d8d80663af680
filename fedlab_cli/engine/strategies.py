"""Choosing a local-training strategy: the same state and numbers, different execution."""

from __future__ import annotations

import torch
from torch import nn

from fedlab_cli.engine.sequential import SequentialStrategy
from fedlab_cli.spec.model import TrainingSpec


def make_strategy(
    name: str, model: nn.Module, training: TrainingSpec, device: torch.device
) -> SequentialStrategy:
    """``auto`` picks per device from measurements: sequential on CPU (DESIGN.md)."""
    if name in ("auto", "sequential"):
        return SequentialStrategy(model, training)
    raise ValueError(f"unknown strategy {name!r}")
