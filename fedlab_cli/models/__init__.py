"""Model architectures by name, each with the parameter roles methods select tensors by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from fedlab_cli.errors import FedlabError
from fedlab_cli.models.resnet import ResNet
from fedlab_cli.models.roles import Kind, Position, TensorRole, assign_roles
from fedlab_cli.models.small_cnn import SmallCNN
from fedlab_cli.models.vgg import VGG6

__all__ = ["MODELS", "Kind", "ModelInfo", "Position", "TensorRole", "assign_roles", "build"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    factory: Callable[..., nn.Module]
    description: str


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("vgg6", VGG6, "VGG6 (reference vgg11_bn 'A'), 32x32 input; CIFAR-10"),
        ModelInfo("resnet6", partial(ResNet, 2), "ResNet6: 7x7 stem + 2 BasicBlock stages"),
        ModelInfo("resnet8", partial(ResNet, 3), "ResNet8: 7x7 stem + 3 stages; CIFAR-100"),
        ModelInfo("resnet10", partial(ResNet, 4), "ResNet10: 7x7 stem + 4 stages; Tiny-ImageNet"),
        ModelInfo("small_cnn", SmallCNN, "3-conv BN CNN for the digits quickstart"),
    )
}


def build(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model; its roles are attached as ``model.roles`` (state_dict order)."""
    if name not in MODELS:
        raise FedlabError(
            f"model.name: unknown model {name!r} (known: {', '.join(sorted(MODELS))})"
        )
    model = MODELS[name].factory(num_classes=num_classes, in_channels=in_channels)
    model.roles = assign_roles(model)
    return model
