"""Choosing a local-training strategy: the same state and numbers, different execution.

``auto`` picks per device, from measurements:

- CPU: ``sequential``. On the 2-core development CPU, one local step of 10 clients (batch 100,
  32x32) took 2.9 s sequentially vs 3.4 s vectorized for ResNet8 and 15 s vs 41 s for VGG6
  (grouped convolutions are slow in oneDNN); a CIFAR-100 ResNet8 round of 4 clients (bench,
  1 thread, median of 3) 7.8 s vs 11.3 s. Only tiny models gain from batching clients on a CPU
  (the digits quickstart: 2.5 s vs 1.7 s a round), and those runs are short anyway.
- CUDA: ``vectorized``. There the sequential strategy is bound by launching hundreds of tiny
  kernels per client and step (REFERENCE.md §8.3); batching clients is the point of the strategy.
  GPU measurements are pending (benchmarks/bench.py prints them on a GPU machine).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from fedlab_cli.engine.client_data import ClientData
from fedlab_cli.engine.method import LocalTrace, Method
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.sequential import SequentialStrategy
from fedlab_cli.engine.vectorized import VectorizedStrategy
from fedlab_cli.spec.model import EngineSpec, TrainingSpec


class Strategy(Protocol):
    """Local training and evaluation over the stacked population."""

    model: nn.Module

    def forward(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        *,
        train: bool | None = None,
    ) -> Tensor: ...

    def train(
        self,
        population: Population,
        clients: list[int],
        data: ClientData,
        generator: torch.Generator,
        method: Method,
        round_index: int,
    ) -> LocalTrace: ...

    def evaluate(self, population: Population, data: ClientData) -> Tensor: ...


def resolve_strategy(name: str, device: torch.device) -> str:
    """The concrete strategy ``name`` means on ``device`` (``auto`` per the measurements above)."""
    if name == "auto":
        return "vectorized" if torch.device(device).type == "cuda" else "sequential"
    if name not in ("sequential", "vectorized"):
        raise ValueError(f"unknown strategy {name!r}")
    return name


def configure_tf32(enabled: bool, device: torch.device) -> None:
    """TF32 tensor cores for fp32 convolutions and matmuls on CUDA (process-wide flags)."""
    if torch.device(device).type != "cuda":
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        precision = "tf32" if enabled else "ieee"
        matmul.fp32_precision = precision
        conv.conv.fp32_precision = precision
    else:
        matmul.allow_tf32 = enabled
        conv.allow_tf32 = enabled


def make_strategy(
    engine: EngineSpec | str, model: nn.Module, training: TrainingSpec, device: torch.device
) -> Strategy:
    """The strategy the engine spec asks for (a bare name means default engine settings)."""
    spec = engine if isinstance(engine, EngineSpec) else EngineSpec(strategy=engine)
    name = resolve_strategy(spec.strategy, device)
    configure_tf32(spec.tf32, device)
    if name == "sequential":
        return SequentialStrategy(model, training)
    return VectorizedStrategy(
        model, training, device, chunk_size=spec.chunk_size, autocast=spec.autocast
    )
