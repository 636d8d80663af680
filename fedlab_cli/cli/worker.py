"""What a process of a multi-process run (``torchrun`` or ``fedlab run --nproc``) does apart.

Rank 0 is the run as one process would be: it checks and locks the run directory, shows the
live view and writes every file; the other ranks train their clients silently and write only
their checkpoint slices. The process group starts as soon as the spec is known, so rank 0 can
hand the others the run directory's (time-stamped) name.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fedlab_cli.engine.device import resolve_device
from fedlab_cli.engine.world import from_environment
from fedlab_cli.spec.model import RunSpec


def in_worker() -> bool:
    """Whether this process is one of several of a run (the launcher set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def configure_threads() -> None:
    """A worker's share of the CPU threads (the launcher's ``FEDLAB_THREADS``)."""
    if in_worker():
        share = os.environ.get("FEDLAB_THREADS") or os.environ.get("OMP_NUM_THREADS") or "1"
        torch.set_num_threads(max(1, int(share)))


def agree(spec: RunSpec, target: Path) -> Path:
    """Start the process group and take rank 0's ``target`` (the default name holds a time)."""
    if not in_worker():
        return Path(target)
    device, _ = resolve_device(spec.engine.device)
    world = from_environment(
        device, spec.engine.collective_timeout, spec.engine.deterministic_reduce
    )
    return Path(world.broadcast_object(str(target)))
