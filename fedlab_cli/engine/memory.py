"""How many clients one batched computation can hold: free memory and a per-client estimate.

The estimate is rough by design (an out-of-memory error halves the chunk and redoes it, with
identical results): parameters five times over (the chunk's copy, gradients, optimizer state,
the last gradients kept for the trace, an update temporary), the buffers, and
``ACTIVATION_FACTOR`` floats per value each layer outputs for one batch.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn

MEMORY_SHARE = 0.6
"""Share of the free memory a chunk may plan to use (the estimate is rough; OOM halves it)."""
ACTIVATION_FACTOR = 4
"""Floats a training step keeps per value a layer outputs: the saved input, its gradient and
the layout copies a grouped convolution makes."""


def free_memory_bytes(device: torch.device) -> int:
    """Memory a chunk may use: free plus cached-but-unused on CUDA, available RAM on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume plenty
        return 1 << 40


def client_bytes(model: nn.Module, image_shape: tuple[int, ...], batch_size: int) -> int:
    """Rough bytes one client of a training chunk needs (fp32); output sizes come from a
    forward pass on the meta device (no memory, no compute)."""
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    values = ACTIVATION_FACTOR * batch_size * activations(model, image_shape)
    return 4 * (5 * params + buffers + values)


def activations(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Values one sample's forward pass writes, summed over every leaf module's output."""
    probe = copy.deepcopy(model).to("meta").eval()
    total = 0

    def count(module: nn.Module, inputs: object, output: Tensor) -> None:
        nonlocal total
        total += output.numel()

    for module in probe.modules():
        if not list(module.children()):
            module.register_forward_hook(count)
    with torch.no_grad():
        probe(torch.empty(1, *image_shape, device="meta"))
    return total + int(torch.Size(image_shape).numel())
