"""Will the partition fit in memory? Checked before anything is allocated.

``data.num_clients: 1000000000`` used to try to allocate 74.5 GiB inside numpy and die with a
``MemoryError`` (or the OOM killer) after a long wait. The estimate below is deliberately a lower
bound, counting only the partition's own arrays (the Dirichlet shares, the per-client sample
positions, their JSON form for ``partition.json``), so a spec it refuses can never have run.
"""

from __future__ import annotations

from pathlib import Path

from fedlab_cli.atomic import human_bytes
from fedlab_cli.data.registry import DATASETS
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.model import RunSpec

BYTES_PER_POSITION = 8 + 36 + 6
"""One sample position: int64 array entry, Python int in a list (``to_json``), JSON text."""

BYTES_PER_CLIENT = 1_000
"""Per-client array and list headers."""


def partition_bytes(
    num_clients: int, train_per_client: int, test_per_client: int, num_classes: int
) -> int:
    """A lower bound on the memory the partition of both pools needs, in bytes."""
    positions = num_clients * (train_per_client + test_per_client)
    shares = num_clients * num_classes * 8  # one pool's Dirichlet draw, float64
    return positions * BYTES_PER_POSITION + shares + num_clients * BYTES_PER_CLIENT


def check_partition_fits(spec: RunSpec, available: int | None = None) -> None:
    """Refuse, naming ``data.num_clients``, a partition larger than the memory available."""
    data = spec.data
    info = DATASETS[data.dataset]
    train, test = per_client_samples(spec)
    need = partition_bytes(data.num_clients, train, test, info.num_classes)
    have = available_memory() if available is None else available
    if have is not None and need > have:
        raise FedlabError(
            f"data.num_clients: {data.num_clients} clients x ({train} + {test}) samples need "
            f"at least {human_bytes(need)} for the "
            f"partition alone, more than the {human_bytes(have)} of memory available "
            f"(got {data.num_clients})"
        )


def per_client_samples(spec: RunSpec) -> tuple[int, int]:
    """Train and test positions per client the spec's partition lists (the Dirichlet split's
    requests; an equal share of each pool for the others, the whole test pool for FedPM's
    pathological split)."""
    data, info = spec.data, DATASETS[spec.data.dataset]
    if data.partition == "dirichlet":
        return data.train_per_client, data.test_per_client
    train = -(-info.train_pool // data.num_clients)
    test = (
        info.test_pool
        if data.partition == "pathological"
        else -(-info.test_pool // data.num_clients)
    )
    return train, test


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the kernel's ``MemAvailable`` and
    the container's cgroup headroom; None where neither can be read."""
    found = [b for b in (_meminfo_available(), _cgroup_headroom()) if b is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None
