"""Streamed dropout behaves as torch's dropout, drawing the engine's per-client noise."""

import pytest
import torch
from torch import nn

from fedlab_cli.models import noise
from fedlab_cli.models.stochastic import Dropout, is_stochastic, streamed


def test_dropout_zeroes_p_and_scales_the_rest():
    layer = Dropout(0.3).train()
    x = torch.ones(200, 100)
    keys = torch.tensor([noise.client_key(0, 5)])
    with noise.stream(keys, 1) as s, noise.substream(s.keys[0]):
        y = layer(x)
        u = None
    with noise.stream(keys, 1) as s, noise.substream(s.keys[0]):
        u = noise.uniform(x.shape, "cpu")  # the same stream, the same draw
    assert torch.equal(y == 0, u < 0.3)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_dropout_is_the_identity_in_eval_mode_and_at_zero():
    x = torch.randn(4, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_streamed_swaps_torch_dropout_in_place():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.25), nn.Sequential(nn.Dropout(0.1)))
    assert not is_stochastic(model)
    swapped = streamed(model)
    assert swapped is model and is_stochastic(model)
    assert [type(m) for m in model.modules()].count(Dropout) == 2
    assert model[1].p == 0.25 and model[2][0].p == 0.1
