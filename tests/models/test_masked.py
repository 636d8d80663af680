"""FedPM's masked-score layers: the closed-form score gradient, frozen values, mask draws."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedlab_cli.models import Kind, assign_roles, build, noise
from fedlab_cli.models.conv_nets import conv4, conv6, conv10
from fedlab_cli.models.masked import MaskedConv2d, MaskedLinear, masked

KEY = torch.tensor([noise.client_key(7, 3)])
TAG = noise.mix64(1, 2, 3)


def drawn(score: torch.Tensor, call: int) -> torch.Tensor:
    """The mask the ``call``-th draw of the pass (KEY, TAG) gives: [u < sigmoid(score)], u
    from the stream directly."""
    with noise.stream(KEY, TAG):
        for _ in range(call - 1):
            noise.uniform(score.shape, score.device)
        u = noise.uniform(score.shape, score.device)[0]
    return (u < torch.sigmoid(score)).float()


def test_linear_score_gradient_is_the_closed_form_for_the_drawn_mask():
    """L = Σ G ⊙ (x (w⊙m)ᵀ + b⊙m_b): ∂L/∂m_ij = w_ij Σ_b G_bi x_bj, ∂L/∂m_b,i = b_i Σ_b G_bi,
    and ∂L/∂s = ∂L/∂m · θ · θ(1 − θ) (θ times the mask's gradient, then sigmoid′)."""
    torch.manual_seed(0)
    layer = MaskedLinear(nn.Linear(5, 4))
    x, g = torch.randn(3, 5), torch.randn(3, 4)
    with noise.stream(KEY, TAG), noise.substream(KEY[0]):  # as the plain forward runs it
        out = layer(x)
    (out * g).sum().backward()
    w, b = layer.weight, layer.bias
    m, m_b = drawn(layer.weight_score.detach(), 1), drawn(layer.bias_score.detach(), 2)
    torch.testing.assert_close(out, x @ (w * m).T + b * m_b)
    theta, theta_b = torch.sigmoid(layer.weight_score), torch.sigmoid(layer.bias_score)
    grad_m = w * (g.T @ x)
    grad_mb = b * g.sum(0)
    expected = grad_m * theta * theta * (1 - theta)
    expected_b = grad_mb * theta_b * theta_b * (1 - theta_b)
    torch.testing.assert_close(layer.weight_score.grad, expected.detach())
    torch.testing.assert_close(layer.bias_score.grad, expected_b.detach())
    assert 0 < m.mean() < 1  # a real mask, not all kept or all dropped


def test_conv_score_gradient_is_the_weight_gradient_times_w_theta_and_sigmoid_prime():
    torch.manual_seed(1)
    layer = MaskedConv2d(nn.Conv2d(2, 3, kernel_size=3, padding=1))
    x, g = torch.randn(2, 2, 5, 5), torch.randn(2, 3, 5, 5)
    with noise.stream(KEY, TAG), noise.substream(KEY[0]):
        out = layer(x)
    (out * g).sum().backward()
    m, m_b = drawn(layer.weight_score.detach(), 1), drawn(layer.bias_score.detach(), 2)
    w_eff = (layer.weight * m).requires_grad_(True)
    b_eff = (layer.bias * m_b).requires_grad_(True)
    ref = F.conv2d(x, w_eff, b_eff, padding=1)
    torch.testing.assert_close(out, ref)
    gw, gb = torch.autograd.grad((ref * g).sum(), [w_eff, b_eff])
    theta, theta_b = torch.sigmoid(layer.weight_score), torch.sigmoid(layer.bias_score)
    expected = gw * layer.weight * theta**2 * (1 - theta)
    expected_b = gb * layer.bias * theta_b**2 * (1 - theta_b)
    torch.testing.assert_close(layer.weight_score.grad, expected.detach())
    torch.testing.assert_close(layer.bias_score.grad, expected_b.detach())


def test_frozen_values_are_signed_constants_with_the_dense_init_signs():
    torch.manual_seed(2)
    dense = nn.Conv2d(3, 4, kernel_size=3)
    signs, bias_signs = dense.weight.detach().sign(), dense.bias.detach().sign()
    layer = MaskedConv2d(dense)
    c = math.e * math.sqrt(1 / 27)  # fan_in = 3 · 3²
    torch.testing.assert_close(layer.weight, c * signs)
    torch.testing.assert_close(layer.bias, c * bias_signs)
    linear = MaskedLinear(nn.Linear(10, 2))
    torch.testing.assert_close(linear.weight.abs(), torch.full((2, 10), math.e / math.sqrt(10)))
    kept = MaskedLinear(dense_linear := nn.Linear(10, 2), init="kaiming_uniform")
    assert torch.equal(kept.weight, dense_linear.weight.detach())
    # frozen: buffers, never parameters; scores are the only parameters, N(0, 1)
    assert [n for n, _ in layer.named_parameters()] == ["weight_score", "bias_score"]
    assert {n for n, _ in layer.named_buffers()} == {"weight", "bias"}


def test_roles_mark_frozen_weights_and_scores():
    model = masked(build("conv2_tiny", 10, in_channels=1))
    roles = assign_roles(model)
    assert roles["conv1.weight"].kind is Kind.FROZEN
    assert roles["conv1.weight_score"].kind is Kind.SCORE
    assert roles["dense3.bias_score"].is_head
    assert roles["conv1.bias"].position.value == "first"


def test_each_forward_draws_a_new_mask_and_the_same_one_for_the_same_stream():
    torch.manual_seed(3)
    layer = MaskedLinear(nn.Linear(64, 64))
    x = torch.ones(1, 64)

    def pass_twice() -> tuple[torch.Tensor, torch.Tensor]:
        with noise.stream(KEY, TAG), noise.substream(KEY[0]):
            return layer(x), layer(x)

    first, second = pass_twice()
    again, _ = pass_twice()
    assert not torch.equal(first, second)  # a fresh mask on every call
    assert torch.equal(first, again)  # the same stream state, the same mask
    torch.manual_seed(9)  # outside a stream: torch's generator
    a = layer(x)
    torch.manual_seed(9)
    assert torch.equal(layer(x), a)
    assert not torch.equal(layer(x), a)


@pytest.mark.parametrize(
    "factory, classes, channels, entries",
    [(conv4, 10, 1, 1_933_258), (conv6, 10, 3, 2_262_602), (conv10, 100, 3, 19_197_092)],
)
def test_mask_entries_of_fedpm_models(factory, classes, channels, entries):
    """Scores over weights and biases (SPARSE_FL.md §2.4); built on the meta device."""
    with torch.device("meta"):
        model = masked(factory(classes, in_channels=channels))
    assert sum(p.numel() for p in model.parameters()) == entries
    assert sum(b.numel() for b in model.buffers()) == entries
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
