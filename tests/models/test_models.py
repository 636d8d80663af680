"""Architectures match the reference's parameter counts and expose roles by structure."""

import pytest
import torch

from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind, Position, build


@pytest.mark.parametrize(
    "name, classes, total, middle_conv",
    [
        ("vgg6", 10, 3_918_858, 3_907_584),
        ("resnet6", 100, 326_564, 303_104),
        ("resnet8", 100, 1_258_404, 1_220_608),
        ("resnet10", 200, 5_008_392, 4_890_624),
    ],
)
def test_parameter_counts(name, classes, total, middle_conv):
    model = build(name, classes)
    assert sum(p.numel() for p in model.parameters()) == total
    middle = sum(
        p.numel()
        for n, p in model.named_parameters()
        if model.roles[n].position is Position.MIDDLE and model.roles[n].kind is Kind.WEIGHT
    )
    assert middle == middle_conv


@pytest.mark.parametrize("name, size", [("vgg6", 32), ("resnet8", 32), ("resnet10", 64)])
def test_forward_shapes(name, size):
    model = build(name, 7)
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)


def test_vgg6_roles_follow_reference_indices():
    roles = build("vgg6", 10).roles
    assert roles["features.0.weight"].position is Position.FIRST
    assert roles["features.0.bias"].kind is Kind.BIAS
    assert roles["features.1.weight"].kind is Kind.BN
    assert roles["features.1.running_mean"].kind is Kind.BN_STAT
    middle = [
        n for n, r in roles.items() if r.position is Position.MIDDLE and r.kind is Kind.WEIGHT
    ]
    assert middle == [f"features.{i}.weight" for i in (4, 8, 12, 16)]
    assert roles["classifier.0.weight"].is_head and roles["classifier.0.bias"].is_head


def test_resnet_roles_first_is_7x7_stem_and_shortcuts_are_middle():
    model = build("resnet10", 200)
    roles = model.roles
    first = [n for n, r in roles.items() if r.position is Position.FIRST and r.kind is Kind.WEIGHT]
    assert first == ["conv1.weight"] and model.conv1.kernel_size == (7, 7)
    assert roles["layers.1.0.shortcut.0.weight"].position is Position.MIDDLE
    assert roles["layers.1.0.shortcut.1.weight"].kind is Kind.BN
    assert [n for n, r in roles.items() if r.is_head] == ["classifier.weight", "classifier.bias"]
    assert list(roles) == list(model.state_dict())


def test_init_follows_reference():
    vgg = build("vgg6", 10)
    assert torch.count_nonzero(vgg.features[0].bias) == 0
    assert abs(vgg.classifier[0].weight.std().item() - 0.01) < 0.002
    conv = build("resnet8", 100).layers[2][0].conv1.weight  # fan_out = 256*9
    assert abs(conv.std().item() - (2 / (256 * 9)) ** 0.5) < 0.002


def test_small_cnn_for_digits():
    model = build("small_cnn", 10, in_channels=1)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    kinds = {r.kind for r in model.roles.values()}
    assert kinds == {Kind.WEIGHT, Kind.BIAS, Kind.BN, Kind.BN_STAT}


def test_unknown_model_is_a_user_error():
    with pytest.raises(FedlabError, match=r"model\.name: unknown model 'vgg7'"):
        build("vgg7", 10)
