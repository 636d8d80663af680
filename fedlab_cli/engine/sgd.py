"""SGD with momentum and weight decay as ``torch.optim.SGD`` does it, on plain tensor dicts.

Written out so that one update rule serves every strategy (a client at a time now, stacked
clients later) and momentum buffers can be reset each round as the reference does.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def sgd_step(
    params: dict[str, Tensor],
    grads: dict[str, Tensor],
    momentum_buffers: dict[str, Tensor],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """One in-place step; ``momentum_buffers`` starts empty each round and fills on first use."""
    for name, grad in grads.items():
        param = params[name]
        step = grad.add(param, alpha=weight_decay) if weight_decay else grad
        if momentum:
            buf = momentum_buffers.get(name)
            if buf is None:
                buf = momentum_buffers[name] = step.clone()
            else:
                buf.mul_(momentum).add_(step)
            step = buf
        param.add_(step, alpha=-lr)
