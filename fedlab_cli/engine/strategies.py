"""Local-training strategies: the one training core (``trainer.py``), a forward, a block size.

- ``sequential``: blocks of one client, the plain model forward. On a CPU this is the default
  for all but tiny models: batched clients run as grouped convolutions, which oneDNN computes
  slowly and only in NCHW (on the 2-core development CPU a bench round of 4 clients took 1.7 s
  sequentially vs 3.1 s vectorized for ResNet8 on CIFAR-100, 29 MFLOP a sample, and 7.6 s vs
  15.7 s for VGG6 on CIFAR-10).
- ``vectorized``: memory-sized blocks of many clients, ``vmap`` over the model. Tiny models are
  bound by per-client overhead, so batching wins on a CPU too (the digits quickstart's small
  CNN, 1.2 MFLOP a sample: 0.33 s vs 0.23 s a round); ``CPU_BATCHING_MAX_FLOPS`` sits between.
  On CUDA it is always the default: there the sequential strategy is bound by launching
  hundreds of tiny kernels per client and step (REFERENCE.md §8.3).

``auto`` never picks a strategy that cannot run the model: a model whose layers ``vmap``
cannot batch (a probe step at build time says) trains sequentially, and asking for
``vectorized`` then is a one-line error naming the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedlab_cli.engine.forward import BatchedForward, PlainForward
from fedlab_cli.engine.memory import MEMORY_SHARE, client_bytes, free_memory_bytes
from fedlab_cli.engine.precision import Precision
from fedlab_cli.engine.trainer import Chunks, LocalTrainer
from fedlab_cli.spec.model import EngineSpec, TrainingSpec

CPU_BATCHING_MAX_FLOPS = 5_000_000
"""Forward FLOPs per sample up to which ``auto`` batches clients on a CPU (see above)."""

Strategy = LocalTrainer


class SequentialStrategy(LocalTrainer):
    """Clients one after another, each a block of one with the plain model forward."""

    name = "sequential"

    def __init__(
        self,
        model: nn.Module,
        training: TrainingSpec,
        precision: Precision | None = None,
        device: torch.device | str = "cpu",
        **options,
    ) -> None:
        precision = precision or Precision(model)
        super().__init__(
            PlainForward(precision),
            training,
            Chunks(lambda count: 1, torch.device(device)),
            **options,
        )


class VectorizedStrategy(LocalTrainer):
    """Chunks of clients trained as one batched computation, sized from free memory."""

    name = "vectorized"

    def __init__(
        self,
        model: nn.Module,
        training: TrainingSpec,
        device: torch.device | str,
        chunk_size: int | None = None,
        precision: Precision | None = None,
        free_memory: Callable[[], int] | None = None,
        image_shape: tuple[int, ...] | None = None,
        **options,
    ) -> None:
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.image_shape = image_shape
        self.free_memory = free_memory or (lambda: free_memory_bytes(self.device))
        self.auto_chunk: int | None = None  # sized once, on first use
        precision = precision or Precision(model)
        super().__init__(
            BatchedForward(precision), training, Chunks(self._size, self.device), **options
        )

    def _size(self, count: int) -> int:
        """Clients per chunk: ``chunk_size``, else what the free memory holds (sized once)."""
        if self.chunk_size is not None:
            return self.chunk_size
        if self.auto_chunk is None:
            need = client_bytes(self.model, self.image_shape, self.training.batch_size)
            self.auto_chunk = max(1, int(self.free_memory() * MEMORY_SHARE) // need)
        return self.auto_chunk

    def chunk_for(self, count: int) -> int:
        """Clients one chunk of ``count`` holds now (after any out-of-memory halving)."""
        return self.chunks.limit(count)


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
    image_shape: tuple[int, ...],
    flops_per_sample: int | None = None,
    **options,
) -> LocalTrainer:
    """The strategy the engine spec asks for (a bare name means default engine settings);
    ``options`` go to the trainer (seed, stochastic, eval_batch)."""
    spec = engine if isinstance(engine, EngineSpec) else EngineSpec(strategy=engine)
    name = resolve_strategy(spec.strategy, device, flops_per_sample)
    configure_tf32(spec.tf32, device)
    precision = Precision(model, spec.autocast, resolve_layout(spec.layout, device))
    if name == "sequential":
        return SequentialStrategy(model, training, precision, device, **options)
    return VectorizedStrategy(
        model, training, device, spec.chunk_size, precision, image_shape=image_shape, **options
    )
