"""How a block of k clients' models runs: the one thing the two strategies do differently.

Both take the block's stacked tensors ``[k, ...]`` and inputs ``[k, b, C, H, W]`` and return
float32 logits ``[k, b, classes]``:

- ``PlainForward`` (``sequential``, k = 1): the model itself on client 0's views — exactly the
  arithmetic of training one model, channels-last batches included.
- ``BatchedForward`` (``vectorized``): ``torch.func.vmap`` over ``functional_call``; a
  convolution becomes one grouped convolution, BatchNorm normalises with, and updates, each
  client's own statistics (the running statistics are batched too).

Each also owns the two reductions whose float rounding differs between one model and many —
the loss (mean cross-entropy per client) and per-client gradient norms — so the sequential
strategy reproduces one model's numbers bit for bit. Stochastic layers get each client's noise
stream (``fedlab_cli.models.noise``): under ``vmap`` the clients' keys are a batched input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from fedlab_cli.engine.precision import Precision
from fedlab_cli.models import noise


class _Mode:
    """Run the precision's models in a given mode for one call, then restore it."""

    def __init__(self, precision: Precision, train: bool | None) -> None:
        self.precision, self.train, self.saved = precision, train, precision.training

    def __enter__(self) -> None:
        if self.train is not None and self.train != self.saved:
            self.precision.train(self.train)

    def __exit__(self, *exc: object) -> None:
        if self.train is not None and self.train != self.saved:
            self.precision.train(self.saved)


class PlainForward:
    """One client at a time (blocks of k = 1)."""

    batched = False

    def __init__(self, precision: Precision) -> None:
        self.precision = precision

    def __call__(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        inputs: Tensor,
        *,
        train: bool | None = None,
    ) -> Tensor:
        if inputs.shape[0] != 1:
            raise ValueError(f"the plain forward runs one client, got {inputs.shape[0]}")
        one = {n: p[0] for n, p in params.items()}
        stats = {n: b[0] for n, b in buffers.items()}
        current = noise.active()
        with _Mode(self.precision, train):
            if current is None:
                return self.precision.run(one, stats, inputs[0]).unsqueeze(0)
            with noise.substream(current.keys[0]):
                return self.precision.run(one, stats, inputs[0]).unsqueeze(0)

    @staticmethod
    def losses(logits: Tensor, labels: Tensor) -> Tensor:
        """``[1]``: the client's mean cross-entropy, as ``F.cross_entropy`` reduces it."""
        return F.cross_entropy(logits[0], labels[0]).unsqueeze(0)

    @staticmethod
    def norms(grad: Tensor) -> Tensor:
        return grad[0].norm().unsqueeze(0)


class BatchedForward:
    """k clients in one batched computation."""

    batched = True

    def __init__(self, precision: Precision) -> None:
        self.precision = precision
        self._plain = vmap(precision.run_unbatched)
        self._noisy = vmap(self._with_key)

    def _with_key(self, params, buffers, x, key):
        with noise.substream(key):
            return self.precision.run_unbatched(params, buffers, x)

    def __call__(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        inputs: Tensor,
        *,
        train: bool | None = None,
    ) -> Tensor:
        current = noise.active()
        with _Mode(self.precision, train):
            if current is None:
                return self._plain(params, buffers, inputs)
            return self._noisy(params, buffers, inputs, current.keys)

    @staticmethod
    def losses(logits: Tensor, labels: Tensor) -> Tensor:
        """``[k]``: each client's mean cross-entropy (so each gradient slice is its own)."""
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        return ce.view(logits.shape[0], -1).mean(1)

    @staticmethod
    def norms(grad: Tensor) -> Tensor:
        return grad.flatten(1).norm(dim=1)


Forward = PlainForward | BatchedForward


def vmappable(forward: BatchedForward, params, buffers, inputs: Tensor) -> str | None:
    """Why ``forward`` cannot train on these tensors (a probe step), or None if it can."""
    try:
        leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        stats = {n: b.clone() for n, b in buffers.items()}
        keys = torch.zeros(inputs.shape[0], dtype=torch.int64, device=inputs.device)
        with noise.stream(keys, 0):
            logits = forward(leaves, stats, inputs, train=True)
        torch.autograd.grad(logits.float().sum(), list(leaves.values()), allow_unused=True)
    except Exception as err:  # any failure means: do not batch this model
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None
