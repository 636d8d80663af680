"""Masked-score layers: a frozen random network whose weights are kept with learnt probability.

FedPM (docs/SPARSE_FL.md §2.1 step 3) never trains a weight. Each conv/linear layer holds
frozen weights and biases (buffers, role ``FROZEN``) and one trainable score per weight and per
bias (parameters, role ``SCORE``). A forward pass computes θ = sigmoid(score), draws a mask
m ~ Bernoulli(θ) — afresh on every call, from the engine's per-client noise streams
(``noise.uniform``: m = [u < θ]), so both strategies and any chunking draw the same masks and a
resumed run continues bit-exactly — and uses (w ⊙ m, b ⊙ m_b).

Backward is the official code's: the gradient reaching θ is θ times the mask's gradient, and
autograd then applies sigmoid′, so ∂L/∂score = (∂L/∂m) · θ · θ(1 − θ). It is written as
m + θ̄·(θ − θ̄) with θ̄ = θ detached: the value is m exactly (θ − θ̄ is 0), the derivative θ̄.

Frozen values (``init``): ``signed_constant`` is ±e·√(1/fan_in) (the code's ``ME_init``), the
signs those of the spec model's own seeded initialisation (symmetric around 0, so each is a fair
coin and the network is a function of the run seed); ``kaiming_uniform`` keeps that
initialisation itself (PyTorch's default for conv and linear layers, kaiming_uniform_ with
a = √5). Scores are N(0, 1) from torch's generator, seeded by the run seed before building.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedlab_cli.models import noise
from fedlab_cli.models.roles import Kind
from fedlab_cli.models.stochastic import StochasticLayer

Init = Literal["signed_constant", "kaiming_uniform"]


def sample_mask(score: Tensor) -> Tensor:
    """m ~ Bernoulli(sigmoid(score)) with the straight-through gradient θ·∂L/∂m to θ."""
    theta = torch.sigmoid(score)
    bits = (noise.uniform(score.shape, score.device) < theta).to(theta.dtype)
    fixed = theta.detach()
    return bits + fixed * (theta - fixed)


def signed_constant(weight: Tensor, fan_in: int) -> Tensor:
    """±e·√(1/fan_in), the sign of each entry of ``weight`` (0 counts as +)."""
    c = math.e * math.sqrt(1.0 / fan_in)
    return torch.where(weight >= 0, c, -c).to(weight.dtype)


class MaskedLayer(StochasticLayer):
    """Frozen ``weight``/``bias`` buffers and trainable ``weight_score``/``bias_score``."""

    fedlab_layer = True
    bias: Tensor | None

    def _setup(self, dense: nn.Conv2d | nn.Linear, fan_in: int, init: Init) -> None:
        weight = dense.weight.detach()
        bias = None if dense.bias is None else dense.bias.detach()
        if init == "signed_constant":
            weight = signed_constant(weight, fan_in)
            bias = None if bias is None else signed_constant(bias, fan_in)
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", None if bias is None else bias.clone())
        self.weight_score = nn.Parameter(torch.randn_like(weight))
        self.bias_score = None if bias is None else nn.Parameter(torch.randn_like(bias))

    def fedlab_roles(self) -> dict[str, Kind]:
        return {
            "weight": Kind.FROZEN,
            "bias": Kind.FROZEN,
            "weight_score": Kind.SCORE,
            "bias_score": Kind.SCORE,
        }

    def masked(self) -> tuple[Tensor, Tensor | None]:
        """(w ⊙ m, b ⊙ m_b) with freshly drawn masks."""
        weight = self.weight * sample_mask(self.weight_score)
        if self.bias is None or self.bias_score is None:
            return weight, None
        return weight, self.bias * sample_mask(self.bias_score)


class MaskedConv2d(MaskedLayer):
    def __init__(self, dense: nn.Conv2d, init: Init = "signed_constant") -> None:
        super().__init__()
        if dense.padding_mode != "zeros":
            raise ValueError(f"masked convolutions pad with zeros, got {dense.padding_mode!r}")
        self.stride, self.padding = dense.stride, dense.padding
        self.dilation, self.groups = dense.dilation, dense.groups
        fan_in = dense.weight[0].numel()  # in_channels / groups · k²
        self._setup(dense, fan_in, init)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.masked()
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class MaskedLinear(MaskedLayer):
    def __init__(self, dense: nn.Linear, init: Init = "signed_constant") -> None:
        super().__init__()
        self._setup(dense, dense.in_features, init)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.masked()
        return F.linear(x, weight, bias)


def masked(model: nn.Module, init: Init = "signed_constant") -> nn.Module:
    """``model`` with every ``nn.Conv2d``/``nn.Linear`` replaced, in place, by its masked layer
    (in module order, so the score draws follow the layers)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                setattr(parent, name, MaskedConv2d(child, init))
            elif type(child) is nn.Linear:
                setattr(parent, name, MaskedLinear(child, init))
    return model
