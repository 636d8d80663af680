"""Every client's model state at once, as tensors with a leading client dimension.

``params[name]`` and ``buffers[name]`` are ``[C, *shape]``. Cross-client math (averaging,
masks, overlaps) is tensor math over dim 0, never a Python loop over clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedlab_cli.models import TensorRole


@dataclass
class Population:
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    roles: dict[str, TensorRole]

    @classmethod
    def replicate(cls, model: nn.Module, num_clients: int, device: torch.device) -> Population:
        """All clients start from the same initial model, as in the reference."""

        def stack(t: Tensor) -> Tensor:
            return t.detach().to(device).unsqueeze(0).repeat(num_clients, *[1] * t.dim())

        return cls(
            params={n: stack(p) for n, p in model.named_parameters()},
            buffers={n: stack(b) for n, b in model.named_buffers()},
            roles=dict(model.roles),
        )

    @property
    def num_clients(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def index(self, clients: list[int]) -> Tensor:
        """Client numbers as an index tensor on the population's device. On CUDA the copy goes
        through pinned memory, non-blocking: a plain host-to-device copy of a Python list
        waits for the stream, i.e. for all queued work, a sync in the middle of a round."""
        host = torch.tensor(clients, dtype=torch.long)
        if self.device.type != "cuda":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    def tensors(self) -> dict[str, Tensor]:
        """Parameters and buffers together, in one name space."""
        return {**self.params, **self.buffers}

    def client(self, c: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Views of client ``c``'s parameters and buffers (writes go to the population)."""
        return {n: t[c] for n, t in self.params.items()}, {n: t[c] for n, t in self.buffers.items()}

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {"params": self.params, "buffers": self.buffers}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        for group, target in (("params", self.params), ("buffers", self.buffers)):
            for name, tensor in state[group].items():
                target[name].copy_(tensor)


def weighted_mean(stacked: Tensor, clients: Tensor, weights: Tensor) -> Tensor:
    """Mean of ``stacked[clients]`` over the client dimension, weighted by ``weights``."""
    w = (weights / weights.sum()).to(stacked.dtype)
    # elementwise, not a matmul: TF32 matmuls on a GPU would round the weights to 10 bits
    return (stacked[clients] * w.view(-1, *[1] * (stacked.dim() - 1))).sum(0)
