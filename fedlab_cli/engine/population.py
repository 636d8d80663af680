"""Every client's state at once, as tensors with a leading client dimension.

``params[name]`` and ``buffers[name]`` are ``[C, *shape]``, and so is every piece of
per-client state the engine keeps for a method (``state``: declared by the method) or for the
optimizer (``optimizer``: with ``training.optimizer_state: keep``). Cross-client math
(averaging, masks, overlaps) is tensor math over dim 0, never a Python loop over clients. The
optimizer's per-client step counts are host integers: they follow from the local-step
schedule, so keeping them on the host costs no device sync.

In a run over several processes each holds the contiguous block of clients ``first …
first + C − 1`` of ``total``; client ids stay global (``index`` turns them into rows here) and
``mean_over`` / ``mean_all`` reduce over every process (``fedlab_cli/engine/world.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fedlab_cli.engine.world import World
from fedlab_cli.models import TensorRole


@dataclass
class Population:
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    roles: dict[str, TensorRole]
    state: dict[str, Tensor] = field(default_factory=dict)
    optimizer: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    optimizer_steps: list[int] = field(default_factory=list)
    first: int = 0  # the first client id held here
    total: int = 0  # clients in the whole run (0: those held here)
    world: World = field(default_factory=World)

    @classmethod
    def replicate(
        cls, model: nn.Module, num_clients: int, device: torch.device, world: World | None = None
    ) -> Population:
        """All clients start from the same initial model, as in the reference; with several
        processes, this one holds its shard of the ``num_clients``."""
        world = world or World()
        first, last = world.bounds(num_clients)

        def stack(t: Tensor) -> Tensor:
            return t.detach().to(device).unsqueeze(0).repeat(last - first, *[1] * t.dim())

        return cls(
            params={n: stack(p) for n, p in model.named_parameters()},
            buffers={n: stack(b) for n, b in model.named_buffers()},
            roles=dict(model.roles),
            optimizer_steps=[0] * (last - first),
            first=first,
            total=num_clients,
            world=world,
        )

    @property
    def num_clients(self) -> int:
        """Clients held here (the stacked dimension)."""
        return next(iter(self.params.values())).shape[0]

    @property
    def total_clients(self) -> int:
        return self.total or self.num_clients

    @property
    def clients(self) -> list[int]:
        """The ids of the clients held here."""
        return list(range(self.first, self.first + self.num_clients))

    def holds(self, client: int) -> bool:
        return self.first <= client < self.first + self.num_clients

    def local(self, clients: list[int]) -> list[int]:
        """Those of ``clients`` held here, in order."""
        return [c for c in clients if self.holds(c)]

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def index(self, clients: list[int]) -> Tensor:
        """The rows of these (held) clients, as an index tensor on the population's device. On
        CUDA the copy goes through pinned memory, non-blocking: a plain host-to-device copy of
        a Python list waits for the stream, i.e. for all queued work, a sync mid-round."""
        return to_device([c - self.first for c in clients], self.device)

    def tensors(self) -> dict[str, Tensor]:
        """Parameters and buffers together, in one name space."""
        return {**self.params, **self.buffers}

    def client(self, c: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Views of (held) client ``c``'s parameters and buffers (writes go to the population)."""
        row = c - self.first
        return {n: t[row] for n, t in self.params.items()}, {
            n: t[row] for n, t in self.buffers.items()
        }

    def mean_over(self, names: list[str], rows: Tensor, weights: Tensor) -> dict[str, Tensor]:
        """Per tensor, the ``weights``-weighted mean over the round's participants (``rows``
        here, with their weights, and every other process's) — one reduction of all the tensors
        at once, a rank without participants joining with zeros."""
        tensors = self.tensors()
        world = self.world
        if not world.distributed:
            return {n: weighted_mean(tensors[n], rows, weights) for n in names}
        counts = self.participant_counts(rows)
        if world.deterministic:  # the single-process arithmetic on the gathered participants
            every = world.gather(weights, counts)
            return {
                n: weighted_mean(world.gather(tensors[n][rows], counts), _all(every), every)
                for n in names
            }
        share = (weights / world.sum(weights.sum())).to(next(iter(tensors.values())).dtype)
        flat = [
            (tensors[n][rows] * share.view(-1, *[1] * tensors[n][0].dim())).sum(0).flatten()
            for n in names
        ]
        summed = world.sum(torch.cat(flat)) if flat else torch.zeros(0)
        out, start = {}, 0
        for n in names:
            shape = tensors[n].shape[1:]
            out[n] = summed[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return out

    def participant_counts(self, rows: Tensor) -> list[int]:
        """How many participants each process holds (a tiny gather of the counts)."""
        world = self.world
        if not world.distributed:  # nothing to ask: no read back to the host
            return [len(rows)]
        mine = torch.tensor([len(rows)], dtype=torch.long, device=self.device)
        return [int(n) for n in world.gather(mine, [1] * world.size).tolist()]

    def gather_participants(self, rows_tensor: Tensor, rows: Tensor) -> Tensor:
        """``rows_tensor`` (one row per participant held here) from every process, in client-id
        order: what a method needs of the other clients (FedCAC's overlaps, LIPS's masks)."""
        if not self.world.distributed:
            return rows_tensor
        return self.world.gather(rows_tensor, self.participant_counts(rows))

    def mean_all(self, tensor: Tensor) -> Tensor:
        """The mean over every client of the run of a ``[C, ...]`` tensor held here."""
        if not self.world.distributed:
            return tensor.mean(0)
        if self.world.deterministic:
            counts = [
                b - a
                for a, b in (
                    self.world.bounds(self.total_clients, r) for r in range(self.world.size)
                )
            ]
            return self.world.gather(tensor, counts).mean(0)
        return self.world.sum(tensor.sum(0)) / self.total_clients

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
        if steps is not None and len(steps):
            self.optimizer_steps = [int(s) for s in steps.tolist()]


def to_device(values: list[int], device: torch.device) -> Tensor:
    """A long tensor of ``values`` on ``device`` (pinned and non-blocking on CUDA)."""
    host = torch.tensor(values, dtype=torch.long)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _all(weights: Tensor) -> Tensor:
    return torch.arange(len(weights), device=weights.device)


def weighted_mean(stacked: Tensor, clients: Tensor, weights: Tensor) -> Tensor:
    """Mean of ``stacked[clients]`` over the client dimension, weighted by ``weights``."""
    w = (weights / weights.sum()).to(stacked.dtype)
    # elementwise, not a matmul: TF32 matmuls on a GPU would round the weights to 10 bits
    return (stacked[clients] * w.view(-1, *[1] * (stacked.dim() - 1))).sum(0)


def weights_sha256(population: Population) -> str:
    """Fingerprint of client 0's parameters and buffers (all clients start from the same)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(population.tensors().items()):
        first = tensor[0].detach().cpu().contiguous()
        digest.update(f"{name}|{first.dtype}|{tuple(first.shape)}|".encode())
        digest.update(first.numpy().tobytes())
    return digest.hexdigest()
