"""Helpers shared by test modules (importable as ``support``: tests/ is on pytest's path)."""

import functools
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

from fedlab_cli.engine.method import RunContext


class Crash(Exception):
    """Stands for a run dying mid-way (power cut, OOM kill)."""


def crash_after(round_index: int):
    """An ``on_round`` callback that kills the run once ``round_index`` is logged."""

    def callback(record):
        if record.round == round_index:
            raise Crash

    return callback


def strip_time(records: list[dict]) -> list[dict]:
    """Metric lines without their wall-clock field, for equality across runs."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_run(full, full_summary: dict, resumed, resumed_summary: dict) -> None:
    """A resumed session ended as the uninterrupted one: every metric line, the summary (but
    wall time) and every tensor of the population, bit for bit."""
    assert strip_time(resumed.run_dir.metrics()) == strip_time(full.run_dir.metrics())
    full_summary.pop("wall_seconds")
    resumed_summary.pop("wall_seconds")
    assert resumed_summary == full_summary
    a, b = full.federation.population.tensors(), resumed.federation.population.tensors()
    assert all(torch.equal(a[n], b[n]) for n in a)


def digits_context(dataset: str = "digits", rounds: int = 30) -> RunContext:
    """The RunContext of a small-CNN run on CPU, for calling ``Method.setup`` directly."""
    return RunContext(
        rounds=rounds,
        local_epochs=5,
        dataset=dataset,
        num_classes=10,
        model="small_cnn",
        image_shape=(1, 8, 8),
        seed=0,
        device=torch.device("cpu"),
    )


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
"""Tensor methods that read a value back to the host: on a GPU each one is a device sync."""


class HostReadWatch:
    """Counts host reads of tensors made inside the functions it wraps (``watch.hot(f)``)."""

    def __init__(self, monkeypatch) -> None:
        self.reads: list[str] = []
        self._hot = False
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name))

    def _counted(self, name: str) -> Callable:
        real = getattr(torch.Tensor, name)

        @functools.wraps(real)
        def read(tensor, *args, **kwargs):
            if self._hot:
                self.reads.append(name)
            return real(tensor, *args, **kwargs)

        return read

    def hot(self, function: Callable) -> Callable:
        """``function``, with its tensor reads counted."""

        @functools.wraps(function)
        def call(*args, **kwargs):
            outer, self._hot = self._hot, True
            try:
                return function(*args, **kwargs)
            finally:
                self._hot = outer

        return call


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(f"fedlab_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def fail_chunks_above(monkeypatch, limit: int, after_steps: int = 0) -> None:
    """Make training run out of memory (simulated) in blocks of more than ``limit`` clients,
    after ``after_steps`` of the block's optimizer steps (mid-block: hooks have already run)."""
    from fedlab_cli.engine.trainer import LocalTrainer

    real = LocalTrainer._train_block

    def train_block(self, population, clients, positions, *args):
        if len(positions) <= limit:
            return real(self, population, clients, positions, *args)
        step = self.optimizer.step
        count = 0

        def failing_step(*step_args):
            nonlocal count
            if count == after_steps:
                raise torch.OutOfMemoryError("simulated")
            count += 1
            return step(*step_args)

        self.optimizer.step = failing_step
        try:
            return real(self, population, clients, positions, *args)
        finally:
            self.optimizer.step = step

    monkeypatch.setattr(LocalTrainer, "_train_block", train_block)


def finished_run(path: Path, rounds: int = 3, finish: bool = True, **sections) -> Path:
    """A small real run dir on digits (a checkpoint every round, all kept) at ``path``."""
    from fedlab_cli.engine.federation import run
    from fedlab_cli.engine.session import RunSession
    from fedlab_cli.spec.load import resolve

    raw = {
        "data": {"dataset": "digits", "num_clients": 3, "alpha": 0.5,
                 "train_per_client": 20, "test_per_client": 10},
        "model": {"name": "small_cnn"},
        "federation": {"rounds": rounds},
        "training": {"local_epochs": 1, "batch_size": 10, "lr": 0.05},
        "method": {"name": "fedavg"},
        "inertia": {"ref_rounds": [0]},
        "engine": {"device": "cpu"},
        "output": {"dir": str(path), "checkpoint_every": 1, "keep_checkpoints": 0},
    }  # fmt: skip
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    session = RunSession.start(resolve(raw), path)
    run(session.federation, on_round=[session.on_round])
    if finish:
        session.finish()
    return path


def assert_one_line_refusal(result, fragment: str = "", code: int = 2) -> str:
    """A CliRunner result that failed the way every bad input must: the exit code, exactly one
    ``error:`` line on stderr, no traceback anywhere. Returns the line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0], (fragment, lines[0])
    return lines[0]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the block: float results that depend on no thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def read_events(run_dir: Path):
    """``RUN_DIR/tb`` read with tensorboard's own ``EventAccumulator``, every scalar kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def assert_events_equal_metrics(run_dir: Path) -> None:
    """Each round of metrics.jsonl exactly once in the event files, with its value (TensorBoard
    stores float32: equal to the jsonl value rounded to float32, bit for bit); per-layer
    inertia scalars equal inertia.csv."""
    import json

    import numpy as np
    import pytest

    from fedlab_cli.engine.rundir import RunDir

    events = read_events(run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    tags = set(events.Tags()["scalars"])
    for key in ("loss", "acc_local", "acc_agg", "uplink_bits", "downlink_bits"):
        assert key in tags, key
        found = events.Scalars(key)
        steps = [e.step for e in found]
        assert steps == [r["round"] for r in records], (key, steps)
        assert [np.float32(e.value) for e in found] == [np.float32(r[key]) for r in records]
    layer_tags = [t for t in tags if t.startswith("inertia/rel_update/")]
    assert layer_tags, tags
    rows = RunDir(run_dir).inertia_rows()
    for tag in layer_tags:
        layer = tag.split("/", 2)[2]
        want = [float(r["rel_update"]) for r in rows if r["layer"] == layer]
        got = events.Scalars(tag)
        assert [e.step for e in got] == list(range(len(records)))
        assert [e.value for e in got] == pytest.approx(want, rel=1e-6)
