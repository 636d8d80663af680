"""SSFL's ResNet-18-GN: counts from SPARSE_FL.md §1.4, structure from the official model."""

import pytest
import torch
from torch import nn

from fedlab_cli.models.resnet18_gn import resnet18_gn


def _weights_and_others(model: nn.Module) -> tuple[int, int]:
    """Conv/linear weights (SSFL's prunable set) and everything else."""
    prunable = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    return prunable, sum(p.numel() for p in model.parameters()) - prunable


@pytest.mark.parametrize(
    "classes, total, prunable, others",
    [(10, 11_173_962, 11_164_352, 9_610), (100, 11_220_132, 11_210_432, 9_700)],
)
def test_parameter_counts(classes, total, prunable, others):
    model = resnet18_gn(classes)
    assert sum(p.numel() for p in model.parameters()) == total
    assert _weights_and_others(model) == (prunable, others)


def test_forward_shape_and_spatial_sizes_without_max_pool():
    model = resnet18_gn(10).eval()
    seen = {}
    for name in ("layer1", "layer4"):
        module = model.get_submodule(name)
        module.register_forward_hook(lambda m, i, o, name=name: seen.update({name: (i[0], o)}))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    # Stride-1 3x3 stem and no pooling before the stages: layer1 sees the full 32x32 image.
    assert seen["layer1"][0].shape == (2, 64, 32, 32)
    assert seen["layer4"][1].shape == (2, 512, 4, 4)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.bias is None


def test_every_norm_is_groupnorm_with_32_groups_and_no_buffers():
    model = resnet18_gn(10)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    # stem + 4 stages x 2 blocks x 2 + 3 shortcut norms
    assert len(norms) == 1 + 16 + 3
    assert all(m.num_groups == 32 and m.affine for m in norms)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []


def test_names_and_shapes_follow_the_official_state_dict():
    state = resnet18_gn(10).state_dict()
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.1.bn2.bias": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer2.0.shortcut.1.weight": (128,),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "linear.weight": (10, 512),
        "linear.bias": (10,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("layer1.0.shortcut") for k in state)  # same shape: identity
    assert len(state) == 62  # 21 convs/linear weights + 20 norms x 2 + 1 bias


def test_in_channels_and_classes_set_the_stem_and_head():
    model = resnet18_gn(7, in_channels=1)
    assert model.conv1.weight.shape == (64, 1, 3, 3) and model.linear.weight.shape == (7, 512)
