"""The processes one run spans: which clients this one holds, and the collectives between them.

A run of K clients over W processes (``torchrun``, or ``fedlab run --nproc W``) gives rank r
the contiguous block of client ids ``shard(r)``; every random draw is keyed by the seed and
client ids, never by rank or world size, so a client trains identically wherever it lives.
Cross-client math goes through this object — a weighted sum over participants is a local sum
plus one ``all_reduce``, a method that needs other clients' tensors ``gather``s them in
client-id order — and with one process every collective is the identity, so single-process
runs compute exactly what they computed before. Every collective has the process group's
timeout: a lost rank ends the run with a one-line error naming it, never a hang.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from fedlab_cli.errors import FedlabError

DEFAULT_TIMEOUT_S = 300


class RankLostError(FedlabError):
    """A collective failed because another process of the run died or stopped answering."""

    exit_code = 1


def shard_bounds(num_clients: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[first, last)`` client ids of ``rank``: contiguous blocks, the first ranks one larger."""
    base, extra = divmod(num_clients, world_size)
    first = rank * base + min(rank, extra)
    return first, first + base + (1 if rank < extra else 0)


@dataclass
class World:
    """This process's place in the run; ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    deterministic: bool = False  # reduce by gathering and summing in client-id order

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bounds(self, num_clients: int, rank: int | None = None) -> tuple[int, int]:
        return shard_bounds(num_clients, self.size, self.rank if rank is None else rank)

    def owners(self, clients: list[int], num_clients: int) -> list[int]:
        """How many of ``clients`` each rank holds (everyone knows, no communication)."""
        counts = []
        for r in range(self.size):
            first, last = self.bounds(num_clients, r)
            counts.append(sum(first <= c < last for c in clients))
        return counts

    # -- collectives (identity with one process) ---------------------------------------------

    def sum(self, tensor: Tensor) -> Tensor:
        """Elementwise sum over ranks (a new tensor)."""
        if not self.distributed:
            return tensor
        out = tensor.clone()
        self._call(dist.all_reduce, out, op=dist.ReduceOp.SUM)
        return out

    def gather(self, rows: Tensor, counts: list[int]) -> Tensor:
        """Every rank's ``rows`` (``counts[r]`` of them on rank r) joined in rank order — which,
        as shards are contiguous, is client-id order."""
        if not self.distributed:
            return rows
        dtype = rows.dtype
        wire = rows.to(torch.uint8) if dtype == torch.bool else rows
        width = max(counts)
        padded = wire.new_zeros(width, *wire.shape[1:])
        padded[: wire.shape[0]] = wire
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        self._call(dist.all_gather, parts, padded.contiguous())
        joined = torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])
        return joined.to(dtype) if dtype == torch.bool else joined

    def broadcast_object(self, value: object) -> object:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        self._call(dist.broadcast_object_list, box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            self._call(dist.monitored_barrier if _is_gloo() else dist.barrier)

    def _call(self, collective, *args, **kwargs) -> None:
        try:
            collective(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as err:
            raise RankLostError(describe_failure(self, err)) from None


def _is_gloo() -> bool:
    return dist.is_initialized() and dist.get_backend() == "gloo"


def describe_failure(world: World, err: Exception) -> str:
    """One line: which rank was lost (as far as this one can tell) and what to do."""
    lost = _lost_ranks(world) or [r for r in range(world.size) if r != world.rank]
    who = f"rank {', '.join(map(str, lost))}"
    kind = "timed out" if "timeout" in str(err).lower() else "stopped answering"
    return (
        f"distributed: {who} of {world.size} {kind} (seen by rank {world.rank}); resume from "
        "the last checkpoint with `fedlab run --resume RUN_DIR`"
    )


def _lost_ranks(world: World) -> list[int]:
    """Ranks whose heartbeat in the rendezvous store is missing or old."""
    store = _STORE.get("store")
    if store is None:
        return []
    lost = []
    for r in range(world.size):
        if r == world.rank:
            continue
        try:
            if not store.check([f"alive/{r}/{_STORE['round']}"]):
                lost.append(r)
        except Exception:  # the store itself is gone (its host, rank 0, died)
            lost.append(0)
    return sorted(set(lost))


_STORE: dict = {"store": None, "round": 0}


def heartbeat(world: World, round_index: int) -> None:
    """Mark this rank as alive at the start of a round (names the lost rank on failure)."""
    _STORE["round"] = round_index
    store = _STORE.get("store")
    if world.distributed and store is not None:
        store.set(f"alive/{world.rank}/{round_index}", "1")


def env_rank() -> int:
    """This process's rank as the launcher set it (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def from_environment(device: torch.device, timeout_s: float, deterministic: bool) -> World:
    """The world ``torchrun`` (or ``fedlab run --nproc``) describes in the environment, its
    process group started (gloo on CPU, NCCL on CUDA: one GPU per process); else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(deterministic=deterministic)
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=size
        )
        _STORE["store"] = _group_store()
    return World(rank=rank, size=size, deterministic=deterministic)


def _group_store():
    """The process group's rendezvous store, for heartbeats (they only sharpen the error)."""
    try:
        return dist.PrefixStore("fedlab", dist.distributed_c10d._get_default_store())
    except Exception:
        return None
