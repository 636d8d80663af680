"""FedPM's Conv-4/6/10: counts from SPARSE_FL.md §2.4, forward against a hand-written one."""

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedlab_cli.models.conv_nets import conv4, conv6, conv10

CASES = {
    # factory, classes, in_channels, side, total, widths, dense1 input
    "conv4": (conv4, 10, 1, 28, 1_933_258, (64, 64, 128, 128), 6272),
    "conv6": (conv6, 10, 3, 32, 2_262_602, (64, 64, 128, 128, 256, 256), 4096),
    "conv10": (
        conv10,
        100,
        3,
        32,
        19_197_092,
        (64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024),
        1024,
    ),
}


@cache
def _model(name: str) -> nn.Module:
    """One seeded instance per architecture, shared by the read-only tests below."""
    factory, classes, channels, *_ = CASES[name]
    torch.manual_seed(0)
    return factory(classes, in_channels=channels)


@pytest.mark.parametrize("name", CASES)
def test_parameter_counts_and_layers(name):
    _, classes, _, _, total, widths, flat = CASES[name]
    model = _model(name)
    assert sum(p.numel() for p in model.parameters()) == total
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == list(widths)
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [(d.in_features, d.out_features) for d in dense] == [
        (flat, 256),
        (256, 256),
        (256, classes),
    ]
    assert all(m.bias is not None for m in convs + dense)
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norm_types) for m in model.modules())
    assert list(model.buffers()) == []


def test_weight_and_bias_split_matches_fedpm_mask_counts():
    for name, weights, biases in (
        ("conv4", 1_932_352, 906),
        ("conv6", 2_261_184, 1_418),
        ("conv10", 19_192_512, 4_580),
    ):
        params = dict(_model(name).named_parameters())
        assert sum(p.numel() for k, p in params.items() if k.endswith("weight")) == weights
        assert sum(p.numel() for k, p in params.items() if k.endswith("bias")) == biases


def _by_hand(model: nn.Module, x: torch.Tensor, num_convs: int) -> torch.Tensor:
    """The documented forward: relu after each conv, 2x2 max-pool after each pair, relu
    between dense layers, none after the last."""
    for i in range(1, num_convs + 1):
        conv = getattr(model, f"conv{i}")
        x = torch.clamp(F.conv2d(x, conv.weight, conv.bias, padding=1), min=0)
        if i % 2 == 0:
            b, c, h, w = x.shape
            x = x.reshape(b, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))
    x = x.reshape(len(x), -1)
    x = torch.clamp(x @ model.dense1.weight.T + model.dense1.bias, min=0)
    x = torch.clamp(x @ model.dense2.weight.T + model.dense2.bias, min=0)
    return x @ model.dense3.weight.T + model.dense3.bias


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_the_documented_structure(name):
    _, classes, channels, side, _, widths, _ = CASES[name]
    model = _model(name)
    x = torch.randn(2, channels, side, side)
    out = model(x)
    assert out.shape == (2, classes)
    torch.testing.assert_close(out, _by_hand(model, x, len(widths)), rtol=1e-4, atol=1e-5)


def test_state_dict_names_follow_fedpm():
    keys = list(conv6(10).state_dict())
    assert keys[:2] == ["conv1.weight", "conv1.bias"]
    assert keys[-6:] == [
        "dense1.weight",
        "dense1.bias",
        "dense2.weight",
        "dense2.bias",
        "dense3.weight",
        "dense3.bias",
    ]
