"""Choosing a local-training strategy: the same state and numbers, different execution.

``auto`` picks per device, from measurements:

- CPU: ``sequential`` with channels-last batches, except for tiny models. Batched clients run as
  grouped convolutions, which oneDNN computes slowly and only in NCHW: on the 2-core development
  CPU a bench round of 4 clients took 1.7 s sequentially vs 3.1 s vectorized for ResNet8 on
  CIFAR-100 (29 MFLOP a sample) and 7.6 s vs 15.7 s for VGG6 on CIFAR-10. Tiny models are bound
  by per-client overhead instead, so batching wins: the digits quickstart's small CNN (1.2 MFLOP
  a sample) ran 0.33 s vs 0.23 s a round. ``CPU_BATCHING_MAX_FLOPS`` sits between the two.
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
from fedlab_cli.engine.precision import Precision
from fedlab_cli.engine.sequential import SequentialStrategy
from fedlab_cli.engine.vectorized import VectorizedStrategy
from fedlab_cli.models.flops import forward_flops
from fedlab_cli.spec.model import EngineSpec, TrainingSpec

CPU_BATCHING_MAX_FLOPS = 5_000_000
"""Forward FLOPs per sample up to which ``auto`` batches clients on a CPU (see above)."""


class Strategy(Protocol):
    """Local training and evaluation over the stacked population."""

    name: str
    model: nn.Module
    precision: Precision

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


def resolve_strategy(name: str, device: torch.device, flops_per_sample: int | None = None) -> str:
    """The concrete strategy ``name`` means on ``device`` (``auto`` per the measurements above;
    on a CPU, models of at most ``CPU_BATCHING_MAX_FLOPS`` per sample are batched)."""
    if name == "auto":
        if torch.device(device).type == "cuda":
            return "vectorized"
        small = flops_per_sample is not None and flops_per_sample <= CPU_BATCHING_MAX_FLOPS
        return "vectorized" if small else "sequential"
    if name not in ("sequential", "vectorized"):
        raise ValueError(f"unknown strategy {name!r}")
    return name


def resolve_layout(layout: str, device: torch.device) -> bool:
    """Whether single-model passes take channels-last batches (``auto``: on CPU, where oneDNN
    runs that layout 1.1-1.3x faster, fedlab_cli/engine/precision.py; CUDA is unmeasured)."""
    if layout == "auto":
        return torch.device(device).type == "cpu"
    return layout == "channels_last"


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
    engine: EngineSpec | str,
    model: nn.Module,
    training: TrainingSpec,
    device: torch.device,
    image_shape: tuple[int, ...] | None = None,
) -> Strategy:
    """The strategy the engine spec asks for (a bare name means default engine settings);
    ``image_shape`` lets ``auto`` weigh the model's cost per sample."""
    spec = engine if isinstance(engine, EngineSpec) else EngineSpec(strategy=engine)
    flops = forward_flops(model, image_shape) if image_shape is not None else None
    name = resolve_strategy(spec.strategy, device, flops)
    configure_tf32(spec.tf32, device)
    precision = Precision(model, spec.autocast, resolve_layout(spec.layout, device))
    if name == "sequential":
        return SequentialStrategy(model, training, precision)
    return VectorizedStrategy(
        model, training, device, chunk_size=spec.chunk_size, precision=precision
    )
