"""Stochastic layers whose randomness comes from the engine's per-client streams (``noise``).

``Dropout`` is ``torch.nn.Dropout`` (zero each value with probability p, scale the rest by
1/(1−p), identity in eval mode) drawing from ``noise.uniform``; ``streamed`` swaps every
``nn.Dropout`` of a model for it, so a third-party model with dropout trains reproducibly in
both strategies. A model keeps torch's own random layers only where this module has no
replacement: ``is_stochastic`` tells the engine which models draw noise at all.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedlab_cli.models import noise


class StochasticLayer(nn.Module):
    """Marks a layer that draws from ``noise.uniform`` on some forward passes."""


class Dropout(StochasticLayer):
    """Inverted dropout with the engine's noise: keep where u >= p, scale by 1/(1−p)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = noise.uniform(x.shape, x.device) >= self.p
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def streamed(model: nn.Module) -> nn.Module:
    """``model`` with each ``nn.Dropout`` replaced, in place, by the streamed ``Dropout``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
    return model


def is_stochastic(model: nn.Module) -> bool:
    """Whether any layer of ``model`` draws engine noise."""
    return any(isinstance(m, StochasticLayer) for m in model.modules())
