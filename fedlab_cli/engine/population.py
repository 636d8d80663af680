"""Every client's state at once, as tensors with a leading client dimension.

``params[name]`` and ``buffers[name]`` are ``[C, *shape]``, and so is every piece of
per-client state the engine keeps for a method (``state``: declared by the method) or for the
optimizer (``optimizer``: with ``training.optimizer_state: keep``). Cross-client math
(averaging, masks, overlaps) is tensor math over dim 0, never a Python loop over clients. The
optimizer's per-client step counts are host integers: they follow from the local-step
schedule, so keeping them on the host costs no device sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fedlab_cli.models import TensorRole


@dataclass
class Population:
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    roles: dict[str, TensorRole]
    state: dict[str, Tensor] = field(default_factory=dict)
    optimizer: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    optimizer_steps: list[int] = field(default_factory=list)

    @classmethod
    def replicate(cls, model: nn.Module, num_clients: int, device: torch.device) -> Population:
        """All clients start from the same initial model, as in the reference."""

        def stack(t: Tensor) -> Tensor:
            return t.detach().to(device).unsqueeze(0).repeat(num_clients, *[1] * t.dim())

        return cls(
            params={n: stack(p) for n, p in model.named_parameters()},
            buffers={n: stack(b) for n, b in model.named_buffers()},
            roles=dict(model.roles),
            optimizer_steps=[0] * num_clients,
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

    def add_state(self, name: str, tensor: Tensor) -> Tensor:
        """Declare per-client state ``[C, ...]`` that the engine keeps with the clients: sliced
        for each training block, committed with it, and carried in checkpoints."""
        if name in self.state:
            raise ValueError(f"client state {name!r} is declared twice")
        if tensor.shape[:1] != (self.num_clients,):
            raise ValueError(f"client state {name!r} must be [clients, ...], got {tensor.shape}")
        self.state[name] = tensor
        return tensor

    def state_dict(self) -> dict:
        return {
            "params": self.params,
            "buffers": self.buffers,
            "state": self.state,
            "optimizer": self.optimizer,
            "optimizer_steps": torch.tensor(self.optimizer_steps, dtype=torch.long),
        }

    def load_state_dict(self, state: dict) -> None:
        for group, target in (
            ("params", self.params),
            ("buffers", self.buffers),
            ("state", self.state),
        ):
            for name, tensor in state.get(group, {}).items():
                target[name].copy_(tensor)
        self.optimizer = {
            name: {slot: t.to(self.device) for slot, t in slots.items()}
            for name, slots in state.get("optimizer", {}).items()
        }
        steps = state.get("optimizer_steps")
        if steps is not None:
            self.optimizer_steps = [int(s) for s in steps.tolist()]


def weighted_mean(stacked: Tensor, clients: Tensor, weights: Tensor) -> Tensor:
    """Mean of ``stacked[clients]`` over the client dimension, weighted by ``weights``."""
    w = (weights / weights.sum()).to(stacked.dtype)
    # elementwise, not a matmul: TF32 matmuls on a GPU would round the weights to 10 bits
    return (stacked[clients] * w.view(-1, *[1] * (stacked.dim() - 1))).sum(0)
