"""Optimizers over stacked client state: ``torch.optim`` step for step, for k clients at once.

Each optimizer is an (init, step) pair in the manner of optax: ``init(params)`` returns its
state, one ``[k, *shape]`` tensor per parameter and slot, and ``step`` updates parameters and
state in place. Everything is elementwise, so a block of k clients computes exactly what k
separate ``torch.optim`` instances compute, and the engine can slice, chunk, move and
checkpoint the state like the parameters. State starts at zero: a zero momentum buffer after
``mul_(m).add_(g)`` is exactly ``g``, which is what ``torch.optim.SGD`` stores on its first
step, so a fresh state needs no "first step" branch.

Adam's bias correction needs each client's step count. The engine keeps these counts on the
host (they follow from the schedule of local steps, so reading them costs no device sync) and
passes them in; clients of one block with equal counts take torch's scalar path exactly.

Gradient clipping (``clip_grad_norms``) is ``torch.nn.utils.clip_grad_norm_`` applied to each
client's gradients separately: the global 2-norm over all its tensors, and a scale of
``max_norm / (norm + 1e-6)`` where that is below 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from fedlab_cli.spec.model import TrainingSpec

State = dict[str, dict[str, Tensor]]
"""Per parameter name, the optimizer's slots (``momentum_buffer``, ``exp_avg``, ...)."""


class Optimizer(Protocol):
    slots: tuple[str, ...]

    def init(self, params: dict[str, Tensor]) -> State: ...

    def step(
        self,
        params: dict[str, Tensor],
        grads: dict[str, Tensor],
        state: State,
        lr: float,
        steps: Sequence[int],
    ) -> None:
        """One in-place step of the tensors in ``grads``; ``steps`` holds each client's count
        of steps taken including this one."""
        ...


def _zeros(params: dict[str, Tensor], slots: tuple[str, ...]) -> State:
    return {
        n: {s: torch.zeros_like(p, memory_format=torch.contiguous_format) for s in slots}
        for n, p in params.items()
    }


class SGD:
    """``torch.optim.SGD`` (momentum, dampening 0, Nesterov, L2 weight decay)."""

    slots = ("momentum_buffer",)

    def __init__(self, momentum: float, weight_decay: float, nesterov: bool = False) -> None:
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        if not momentum:
            self.slots = ()

    def init(self, params: dict[str, Tensor]) -> State:
        return _zeros(params, self.slots)

    @torch.no_grad()
    def step(self, params, grads, state, lr, steps) -> None:
        for name, grad in grads.items():
            param = params[name]
            d_p = grad.add(param, alpha=self.weight_decay) if self.weight_decay else grad
            if self.momentum:
                buf = state[name]["momentum_buffer"]
                buf.mul_(self.momentum).add_(d_p)
                d_p = d_p.add(buf, alpha=self.momentum) if self.nesterov else buf
            param.add_(d_p, alpha=-lr)


class Adam:
    """``torch.optim.Adam`` (L2 weight decay added to the gradient, no AMSGrad)."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay

    def init(self, params: dict[str, Tensor]) -> State:
        return _zeros(params, self.slots)

    @torch.no_grad()
    def step(self, params, grads, state, lr, steps) -> None:
        uniform = len(set(steps)) == 1
        if uniform:
            step_size, correction2_sqrt = self._corrections(lr, steps[0])
        else:
            corrections = [self._corrections(lr, s) for s in steps]
        for name, grad in grads.items():
            param = params[name]
            exp_avg, exp_avg_sq = state[name]["exp_avg"], state[name]["exp_avg_sq"]
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            if uniform:
                denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(self.eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)
            else:  # per client: the same float32 arithmetic as addcdiv's scalar path
                shape = (-1, *[1] * (param.dim() - 1))
                sizes = _per_client([-s for s, _ in corrections], param, shape)
                sqrt2 = _per_client([c for _, c in corrections], param, shape)
                denom = (exp_avg_sq.sqrt() / sqrt2).add_(self.eps)
                param.add_(exp_avg * sizes / denom)

    def _corrections(self, lr: float, step: int) -> tuple[float, float]:
        """Step size and sqrt of the second bias correction, in Python floats as torch."""
        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        return lr / bias_correction1, bias_correction2**0.5


def _per_client(values: list[float], like: Tensor, shape: tuple[int, ...]) -> Tensor:
    host = torch.tensor(values, dtype=like.dtype)
    if like.device.type == "cuda":
        host = host.pin_memory()
    return host.to(like.device, non_blocking=True).view(shape)


def make_optimizer(training: TrainingSpec) -> Optimizer:
    if training.optimizer == "adam":
        return Adam(training.betas, training.eps, training.weight_decay)
    return SGD(training.momentum, training.weight_decay, training.nesterov)


def clip_grad_norms(grads: dict[str, Tensor], max_norm: float) -> None:
    """Scale each client's gradients (dim 0) to at most ``max_norm`` global 2-norm, in place."""
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()], dim=1)  # [k, n]
    total = norms.norm(dim=1)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads.values():
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
