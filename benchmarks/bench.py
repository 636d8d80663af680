"""Time fedlab on a preset shortened to a few rounds, against a reference-style loop, here.

    python benchmarks/bench.py PRESET [--rounds 2] [--repeats 3] [--clients N]
        [--set key=value ...] [--strategies auto] [--data auto|real|synthetic]
        [--no-reference] [--warmup N] [--threads N] [--json]

For each repeat it runs every requested fedlab strategy and then the reference-style loop
(benchmarks/reference_loop.py: one model per client, PIL transforms per sample in a DataLoader,
clients one after another, per-client evaluation) on the same workload, in this process, on the
spec's device. It prints seconds per round, rounds/s, training samples/s, achieved TFLOP/s, the
projected time of the preset's full protocol, and the ratio reference / fedlab (medians over the
repeats). ``--clients N`` times N clients (a fresh Dirichlet partition of N) and projects to the
preset's client count, linearly: exact for the sequential strategy and the reference-style loop,
an estimate for the vectorized one, whose chunks are sized from memory. Where the dataset's
files are absent, ``--data auto`` runs its synthetic stand-in (same shapes, pools and
transforms; fedlab_cli/data/synthetic.py).

FLOPs: twice the multiply-accumulates of every conv and linear layer for one sample (forward
hooks on a probe input); a training sample counts three forward passes (forward, gradient of
the input, gradient of the weights), an evaluated sample one. BN, ReLU, pooling and the
optimizer are not counted, so the TFLOP/s figure slightly understates the work done.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_loop, run as a script

from reference_loop import run_reference

from fedlab_cli.cli.presets import find_spec
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.data.registry import DATASETS, load_dataset
from fedlab_cli.data.synthetic import synthetic_name
from fedlab_cli.engine.build import build_federation, build_model, partition
from fedlab_cli.engine.device import resolve_device
from fedlab_cli.engine.strategies import VectorizedStrategy, resolve_strategy
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build
from fedlab_cli.models.flops import forward_flops
from fedlab_cli.spec.load import ResolvedSpec, apply_overrides, read_yaml, resolve


@dataclass(frozen=True)
class Workload:
    """A preset, shortened: what every timed contender runs."""

    name: str
    resolved: ResolvedSpec
    dataset: ImageDataset
    splits: ClientSplits
    device: torch.device
    full_rounds: int
    full_clients: int
    timed_rounds: int
    warmup: int

    @property
    def spec(self):
        return self.resolved.spec

    def projected(self, seconds_per_round: float) -> float:
        """Seconds of the full protocol: every round, every client of the preset."""
        scale = self.full_clients / self.spec.data.num_clients
        return seconds_per_round * self.full_rounds * scale


def round_work(workload: Workload, per_sample: int) -> tuple[int, int, int]:
    """Training samples, evaluated samples and FLOPs of one (evaluated) round, given the
    model's forward FLOPs per sample."""
    spec = workload.spec
    participants = max(1, round(spec.federation.participation * spec.data.num_clients))
    train = participants * spec.data.train_per_client * spec.training.local_epochs
    evaluations = 2 if workload.resolved.method_cls.aggregates else 1
    tested = evaluations * spec.data.num_clients * spec.data.test_per_client
    return train, tested, 3 * per_sample * train + per_sample * tested


def load_workload(
    preset: str,
    overrides: list[str],
    rounds: int,
    data: str,
    warmup: int | None,
    clients: int | None = None,
) -> Workload:
    """The preset with overrides, its dataset (or synthetic stand-in), partition and device."""
    raw = apply_overrides(read_yaml(find_spec(preset)), overrides)
    full = resolve(raw).spec
    shorten = [f"federation.rounds={rounds}"]
    if clients is not None:
        shorten.append(f"data.num_clients={clients}")
    raw = apply_overrides(raw, shorten)
    spec = resolve(raw).spec
    name = spec.data.dataset
    dataset = None
    if data != "synthetic" or synthetic_name(name) not in DATASETS:
        try:
            dataset = load_dataset(name, spec.data.root, download=False)
        except FedlabError:
            if data == "real" or synthetic_name(name) not in DATASETS:
                raise
    if dataset is None:
        name = synthetic_name(name)
        raw = apply_overrides(raw, [f"data.dataset={name}"])
        dataset = load_dataset(name, spec.data.root, download=False)
    resolved = resolve(raw)
    spec = resolved.spec
    splits = partition(spec, dataset)
    device, _ = resolve_device(spec.engine.device)
    if warmup is None:
        warmup = 1 if device.type == "cuda" else 0
    return Workload(
        Path(preset).stem,
        resolved,
        dataset,
        splits,
        device,
        full.federation.rounds,
        full.data.num_clients,
        rounds,
        warmup,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def with_peak_memory(device: torch.device, work: Callable[[], float]) -> tuple[float, int | None]:
    """``work()``'s result and the peak bytes the device's allocator held during it (CUDA; on a
    CPU there is no per-contender figure, and the process's peak RSS is printed at the end)."""
    if device.type != "cuda":
        return work(), None
    torch.cuda.reset_peak_memory_stats(device)
    result = work()
    return result, torch.cuda.max_memory_allocated(device)


def time_fedlab(
    workload: Workload, strategy: str, chunks: dict[str, tuple[int, int]] | None = None
) -> float:
    """Seconds per timed round of fedlab with ``strategy`` (after the warm-up rounds); a
    vectorized run notes in ``chunks`` how many clients it trained at once, and how many the
    memory estimate (lowered by any out-of-memory retry) lets one chunk hold."""
    spec = workload.spec.model_copy(deep=True)
    spec.engine.strategy = strategy
    resolved = ResolvedSpec(spec, workload.resolved.method_cls, workload.resolved.method_params)
    spec.federation.rounds = workload.warmup + workload.timed_rounds
    fed = build_federation(resolved, dataset=workload.dataset, splits=workload.splits)
    for _ in range(workload.warmup):
        fed.run_round()
    synchronize(workload.device)
    start = time.perf_counter()
    for _ in range(workload.timed_rounds):
        fed.run_round()
    synchronize(workload.device)
    seconds = (time.perf_counter() - start) / workload.timed_rounds
    if chunks is not None and isinstance(fed.strategy, VectorizedStrategy):
        chunks[strategy] = (
            fed.strategy.chunk_for(spec.data.num_clients),
            fed.strategy.chunk_for(sys.maxsize),
        )
    return seconds


def time_reference(workload: Workload) -> float:
    """Seconds per timed round of the reference-style loop on the same workload."""
    spec = workload.spec
    if spec.federation.participation < 1:
        raise FedlabError("bench: the reference-style loop has every client take part")
    method = workload.resolved.method_cls(workload.resolved.method_params)
    model = build(spec.model.name, workload.dataset.num_classes, workload.dataset.image_shape[0])
    roles = model.roles
    result = run_reference(
        spec,
        workload.dataset,
        workload.splits,
        workload.device,
        shares=lambda name: method.shares(name, roles[name]),
        aggregates=method.aggregates,
        rounds=workload.warmup + workload.timed_rounds,
    )
    return statistics.fmean(result.seconds[workload.warmup :])


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def benchmark(workload: Workload, strategies: list[str], repeats: int, reference: bool) -> dict:
    """Time every contender ``repeats`` times, printing as it goes; the results as a dict."""
    spec, ds = workload.spec, workload.dataset
    per_sample = flops_per_sample(workload)
    train, tested, flops = round_work(workload, per_sample)
    concrete = [resolve_strategy(s, workload.device, per_sample) for s in strategies]
    chunks: dict[str, tuple[int, int]] = {}
    print(
        f"workload: {workload.name} on {ds.name}, {spec.model.name}, method "
        f"{spec.method.name}, {spec.data.num_clients} clients x {spec.data.train_per_client} "
        f"train / {spec.data.test_per_client} test, {spec.training.local_epochs} epochs, batch "
        f"{spec.training.batch_size}; {workload.timed_rounds} timed rounds (+{workload.warmup} "
        f"warm-up) of {workload.full_rounds}, projected to {workload.full_clients} clients; "
        f"device {workload.device} "
        f"({torch.get_num_threads()} CPU threads)"
    )
    print(
        f"work per round: {train} training samples, {tested} evaluated samples, "
        f"{flops / 1e12:.3f} TFLOP (forward {per_sample / 1e6:.1f} MFLOP/sample, "
        f"training = 3x forward)"
    )
    times: dict[str, list[float]] = {s: [] for s in concrete}
    contenders: dict[str, Callable[[], float]] = {
        s: partial(time_fedlab, workload, s, chunks) for s in concrete
    }
    if reference:
        times["reference"] = []
        contenders["reference"] = partial(time_reference, workload)
    peaks: dict[str, int] = {}
    for r in range(repeats):
        parts = []
        for name, work in contenders.items():
            seconds, peak = with_peak_memory(workload.device, work)
            times[name].append(seconds)
            if peak is not None:
                peaks[name] = max(peak, peaks.get(name, 0))
            parts.append(f"{name} {seconds:.3f} s/round")
        print(f"repeat {r + 1}/{repeats}: " + " | ".join(parts), flush=True)
    results: dict = {"workload": workload.name, "dataset": ds.name, "device": str(workload.device)}
    for name, values in times.items():
        seconds = statistics.median(values)
        results[name] = {
            "seconds_per_round": seconds,
            "repeats": values,
            "rounds_per_s": 1 / seconds,
            "train_samples_per_s": train / seconds,
            "tflops": flops / seconds / 1e12,
            "projected_full_s": workload.projected(seconds),
            "peak_memory_bytes": peaks.get(name),
            "clients_per_chunk": chunks[name][0] if name in chunks else None,
            "clients_that_fit": chunks[name][1] if name in chunks else None,
        }
        label = "reference-style loop" if name == "reference" else f"fedlab {name}"
        extras = ""
        if name in peaks:
            extras += f"; peak memory {peaks[name] / 2**30:.2f} GiB"
        if name in chunks:
            used, fit = chunks[name]
            extras += f"; {used} clients per chunk (memory fits {fit})"
        print(
            f"{label}: {seconds:.3f} s/round (median of {len(values)}), "
            f"{1 / seconds:.3f} rounds/s, {train / seconds:.0f} train samples/s, "
            f"{flops / seconds / 1e12:.4f} TFLOP/s; projected full run ({workload.full_clients} "
            f"clients, {workload.full_rounds} rounds): {duration(workload.projected(seconds))}"
            f"{extras}"
        )
    if reference:
        for s in concrete:
            per_repeat = [a / b for a, b in zip(times["reference"], times[s], strict=True)]
            ratio = statistics.median(per_repeat)
            results[s]["ratio_vs_reference"] = ratio
            listed = ", ".join(f"{x:.2f}" for x in per_repeat)
            print(
                f"ratio reference / fedlab {s}: {ratio:.2f}x "
                f"(median over {repeats} repeats: {listed})"
            )
    return results


def flops_per_sample(workload: Workload) -> int:
    """Forward FLOPs of the architecture the method trains (after its model transform)."""
    return forward_flops(
        build_model(workload.resolved, workload.dataset), workload.dataset.image_shape
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a preset name (quickstart, cifar100_fedbn, ...) or path")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats, medians (default 3)")
    parser.add_argument(
        "--clients", type=int, default=None, help="time this many clients, project to all"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--strategies",
        default="auto",
        help="comma-separated fedlab strategies: auto, sequential, vectorized (default auto)",
    )
    parser.add_argument("--data", choices=["auto", "real", "synthetic"], default="auto")
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds (1 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        workload = load_workload(
            args.preset, args.overrides, args.rounds, args.data, args.warmup, args.clients
        )
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        results = benchmark(workload, strategies, args.repeats, args.reference)
    except (FedlabError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if workload.device.type == "cpu":  # Linux reports kilobytes
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        results["peak_rss_bytes"] = peak_rss
        print(f"process peak RSS (all contenders): {peak_rss / 2**30:.2f} GiB")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
