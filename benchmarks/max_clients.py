"""The largest number of clients the vectorized strategy trains in one chunk, here, measured.

    python benchmarks/max_clients.py PRESET [--start 32] [--limit 4096] [--bisect 3]
        [--set key=value ...] [--data auto|real|synthetic] [--json]

``bench.py`` prints what the memory *estimate* lets a chunk hold; this tries it. For N = start,
2·start, 4·start, ... it runs one round (training and both evaluations) of the preset with N
clients in one chunk (``engine.chunk_size = N``), until a round runs out of device memory or N
passes ``--limit``; then it bisects ``--bisect`` times between the last N that fitted and the
first that did not. A round "fits" when no chunk had to be halved (the strategy's out-of-memory
retry, which keeps the numbers but not the chunk) and nothing else ran out of memory.

Meant for a GPU, where running out of memory raises ``torch.OutOfMemoryError``. On a CPU the
operating system kills a process that asks for too much instead, so keep ``--limit`` within RAM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench, run as a script

from bench import load_workload, synchronize

from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.strategies import VectorizedStrategy
from fedlab_cli.errors import FedlabError


@dataclass(frozen=True)
class Trial:
    clients: int
    fits: bool
    seconds: float | None
    peak_memory_bytes: int | None


def try_clients(preset: str, overrides: list[str], data: str, clients: int) -> Trial:
    """One round of ``clients`` clients in one vectorized chunk: did it fit, how long it took."""
    engine = ["engine.strategy=vectorized", f"engine.chunk_size={clients}"]
    workload = load_workload(preset, overrides + engine, 1, data, 0, clients)
    device = workload.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        fed = build_federation(workload.resolved, dataset=workload.dataset, splits=workload.splits)
        start = time.perf_counter()
        fed.run_round()
        synchronize(device)
        seconds = time.perf_counter() - start
    except torch.OutOfMemoryError:
        return Trial(clients, False, None, None)
    strategy = fed.strategy
    halved = isinstance(strategy, VectorizedStrategy) and strategy.chunks.cap is not None
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Trial(clients, not halved, seconds, peak)


def probe(
    preset: str,
    overrides: list[str],
    data: str,
    start: int,
    limit: int,
    bisect: int,
    trial=None,
) -> tuple[int | None, list[Trial]]:
    """The largest client count that fitted (None if not even ``start``) and every trial."""
    attempt = trial or (lambda n: try_clients(preset, overrides, data, n))
    trials: list[Trial] = []

    def run(n: int) -> bool:
        result = attempt(n)
        trials.append(result)
        seconds = f"{result.seconds:.2f} s" if result.seconds is not None else "-"
        peak = (
            f", peak {result.peak_memory_bytes / 2**30:.2f} GiB"
            if result.peak_memory_bytes is not None
            else ""
        )
        print(f"{n} clients: {'fits' if result.fits else 'out of memory'} ({seconds}{peak})")
        return result.fits

    good, bad, n = None, None, start
    while n <= limit:
        if not run(n):
            bad = n
            break
        good, n = n, 2 * n
    for _ in range(bisect if good is not None and bad is not None else 0):
        middle = (good + bad) // 2
        if middle in (good, bad):
            break
        if run(middle):
            good = middle
        else:
            bad = middle
    return good, trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a preset name (cifar100_fedbn, ...) or path")
    parser.add_argument("--start", type=int, default=32, help="first client count (default 32)")
    parser.add_argument("--limit", type=int, default=4096, help="largest count tried (4096)")
    parser.add_argument("--bisect", type=int, default=3, help="bisection steps (default 3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--data", choices=["auto", "real", "synthetic"], default="auto")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    if args.start < 1 or args.limit < args.start:
        print(f"error: --start {args.start} / --limit {args.limit}: need 1 <= start <= limit")
        return 2
    try:
        largest, trials = probe(
            args.preset, args.overrides, args.data, args.start, args.limit, args.bisect
        )
    except (FedlabError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    limit_note = f" (not above --limit {args.limit})" if trials[-1].fits else ""
    print(f"largest client count in one chunk: {largest}{limit_note}")
    if args.json:
        print(json.dumps({"largest": largest, "trials": [asdict(t) for t in trials]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
