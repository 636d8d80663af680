"""How a strategy's forward passes compute: bfloat16 layers and the channels-last layout.

Neither changes the algorithm; both change float rounding, so both are engine settings.

- ``autocast: bf16`` computes as ``torch.autocast`` does: convolutions and linear layers take
  bfloat16 inputs and weights, the other layers run on what they are given (BatchNorm keeps its
  parameters and running statistics in float32), and parameters, their gradients and the SGD
  update stay float32. ``torch.autocast`` itself does not reach convolutions under ``vmap``
  (their batching rule runs before autocast's dispatch), so a copy of the model, the *twin*,
  casts the inputs of its conv and linear layers instead, and both strategies use it. Under
  ``vmap`` BatchNorm has no mixed-precision batching rule, so the batched twin hands it float32
  inputs: the same normalisation, only the rounding of its output differs.
- ``channels_last`` stores each batch of images as NHWC for one-model forward passes. oneDNN's
  convolutions and pooling run markedly faster on that layout (a ResNet8 training step on the
  2-core development CPU: 0.077 s NCHW vs 0.067 s NHWC; VGG6 0.30 s vs 0.23 s), and every layer's
  output keeps it — except BatchNorm, which computes on a contiguous copy and hands the
  channels-last layout back: torch's CPU BatchNorm kernel for channels-last input loses
  precision (the first full-batch gradient of ResNet10 against float64: 5.6e-3 max per-tensor
  relative error on channels-last input, 7.6e-6 with the copy, 7.7e-6 all contiguous).
  Under ``autocast: bf16`` there is no copy: bfloat16's own rounding puts that gradient 0.16
  (ResNet6) to 0.35 (ResNet10) away from float64 in either layout, two orders of magnitude
  above what the channels-last kernel adds, and the copies cost a quarter of a ResNet8 round.
  ``vmap`` cannot carry a memory format, so batched passes stay NCHW, except
  that their max-pooling layers pool a channels-last copy of their input: NCHW max-pooling is
  that CPU's slowest kernel (2.8 ms vs 0.14 ms for 20x640x8x8 values), and the copy makes the
  quickstart's batched round about 10% faster.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call


class Precision:
    """The models a strategy runs (the model, or its bf16 twins) and the casts around them."""

    def __init__(
        self, model: nn.Module, autocast: str = "none", channels_last: bool = False
    ) -> None:
        self.autocast = autocast
        self.channels_last = channels_last
        self.original = model
        if autocast == "bf16":
            self.model, self.low = bf16_twin(model)
            self.batched_model, _ = bf16_twin(model, batchnorm_float32=True)
        else:
            self.model = self.batched_model = model
            self.low = frozenset[str]()
        if channels_last:
            if autocast != "bf16":  # in bf16 its rounding dwarfs the channels-last kernel's
                self.model = with_contiguous_batchnorm(self.model)
            self.batched_model = with_channels_last_pooling(self.batched_model)

    def train(self, mode: bool) -> None:
        """Put the model and its twins in training or evaluation mode."""
        for model in (self.original, self.model, self.batched_model):
            model.train(mode)

    @property
    def training(self) -> bool:
        """The mode of the models this object runs (``train`` sets them all at once)."""
        return self.model.training and self.batched_model.training

    def run(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        """Float32 logits of one model on a batch ``[B, C, H, W]``."""
        inputs = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return self._call(self.model, params, buffers, inputs)

    def run_unbatched(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor):
        """One client's pass inside ``vmap`` (the batched twin, no memory format)."""
        return self._call(self.batched_model, params, buffers, x)

    def _call(self, model: nn.Module, params: dict[str, Tensor], buffers, x: Tensor) -> Tensor:
        if self.low:
            params = {n: p.to(torch.bfloat16) if n in self.low else p for n, p in params.items()}
        return functional_call(model, (params, buffers), (x,)).float()


def bf16_twin(
    model: nn.Module, batchnorm_float32: bool = False
) -> tuple[nn.Module, frozenset[str]]:
    """A copy of ``model`` whose conv and linear layers (and, if asked, BatchNorms as float32)
    take bfloat16 inputs, and the names of the parameters to cast to bfloat16."""
    twin = copy.deepcopy(model)
    low: set[str] = set()
    for name, module in twin.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_pre_hook(_inputs_to(torch.bfloat16))
            low.update(
                f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)
            )
        elif batchnorm_float32 and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_inputs_to(torch.float32))
    return twin, frozenset(low)


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``MaxPool2d`` on a channels-last copy of its input (same values, faster on a CPU); works
    under ``vmap``, which forbids asking for a memory format but not a permuted copy."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))


def with_channels_last_pooling(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``MaxPool2d`` layers are ``ChannelsLastMaxPool2d``."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.MaxPool2d:
                pool = ChannelsLastMaxPool2d(
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.return_indices,
                    child.ceil_mode,
                )
                setattr(parent, name, pool)
    return twin


def with_contiguous_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm layers normalise a contiguous copy of a channels-last
    input and return the channels-last layout (see the module docstring: precision)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_contiguous_input)
            module.register_forward_hook(_channels_last_output)
    return twin


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    if not _reduces(module):
        return args
    return (args[0].contiguous(), *args[1:])


def _channels_last_output(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    if not _reduces(module) or output.dim() != 4:
        return output
    return output.contiguous(memory_format=torch.channels_last)


def _reduces(module: nn.Module) -> bool:
    """Whether this BatchNorm computes batch statistics (a reduction, where the channels-last
    kernel loses precision); in evaluation with running statistics it is one multiply-add per
    element, the same in either layout, and needs no copy."""
    return module.training or module.running_mean is None


def _inputs_to(dtype: torch.dtype) -> Callable[[nn.Module, tuple], tuple]:
    def cast(module: nn.Module, args: tuple) -> tuple:
        return (args[0].to(dtype), *args[1:])

    return cast
