"""The benchmark: its FLOP count, its reference-style loop doing fedlab's work, its output."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import benchmark_script

from fedlab_cli.data.partition import split_clients
from fedlab_cli.data.registry import load_dataset
from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.federation import run
from fedlab_cli.models import build

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("bench") as module:
        yield module


def test_forward_flops_by_hand(bench):
    """small_cnn on 1x8x8: three 3x3 convs (8x8, 8x8, 4x4 outputs) and a 64->10 linear."""
    macs = 64 * 16 * (1 * 9) + 64 * 32 * (16 * 9) + 16 * 64 * (32 * 9) + 64 * 10
    assert bench.forward_flops(build("small_cnn", 10, in_channels=1), (1, 8, 8)) == 2 * macs
    # VGG6 with its biases ignored: 3->64 @32, 64->128 @16, 128->256 @8, 256->512 @4, 512->512 @2
    vgg = [(3, 64, 32), (64, 128, 16), (128, 256, 8), (256, 512, 4), (512, 512, 2)]
    macs = sum(side * side * cout * cin * 9 for cin, cout, side in vgg) + 512 * 10
    assert bench.forward_flops(build("vgg6", 10), (3, 32, 32)) == 2 * macs


def test_reference_loop_computes_what_fedlab_computes(bench, make_spec):
    """FedAvg with full-batch steps and no augmentation: shuffling cannot matter, so the
    reference-style loop must end where fedlab's sequential strategy ends."""
    resolved = make_spec(
        data={"num_clients": 3, "train_per_client": 30},
        training={"batch_size": 30, "lr": 0.05, "momentum": 0.9},
        federation={"rounds": 2},
    )
    spec = resolved.spec
    ds = load_dataset("digits", spec.data.root)
    splits = split_clients(
        ds.train_labels.numpy(), ds.test_labels.numpy(), 3, spec.data.alpha, 30, 20, spec.seed
    )
    fed = build_federation(resolved, dataset=ds, splits=splits)
    run(fed)
    ref = bench.run_reference(spec, ds, splits, torch.device("cpu"), shares=lambda name: True)
    for c, model in enumerate(ref.models):
        for name, tensor in model.state_dict().items():
            expected = fed.population.tensors()[name][c]
            torch.testing.assert_close(tensor, expected, rtol=1e-4, atol=1e-5, msg=name)
    evaluated = fed.strategy.evaluate(fed.population, fed.data)
    assert ref.acc_agg == pytest.approx(evaluated.tolist())


def test_benchmark_prints_its_ratio(tmp_path):
    """A tiny run of the script: the ratio line is the reference time over fedlab's."""
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "quickstart",
            "--rounds=1",
            "--repeats=1",
            "--clients=2",
            "--set=training.local_epochs=1",
            "--strategies=sequential,vectorized",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    results = json.loads(lines[-1])
    for strategy in ("sequential", "vectorized"):
        expected = (
            results["reference"]["seconds_per_round"] / results[strategy]["seconds_per_round"]
        )
        assert results[strategy]["ratio_vs_reference"] == pytest.approx(expected)
        line = next(x for x in lines if x.startswith(f"ratio reference / fedlab {strategy}: "))
        assert f"{expected:.2f}x" in line
        assert results[strategy]["projected_full_s"] == pytest.approx(
            40 * 10 * results[strategy]["seconds_per_round"]  # quickstart: 40 rounds, 20/2 clients
        )
    assert "work per round: 40 training samples, 200 evaluated samples" in result.stdout
    assert results["vectorized"]["clients_per_chunk"] == 2  # both clients at once
    assert results["vectorized"]["clients_that_fit"] >= 2
    assert results["sequential"]["clients_per_chunk"] is None
    assert results["peak_rss_bytes"] > 0


def test_peak_memory_is_read_per_contender_on_cuda(bench, monkeypatch):
    """The CUDA calls stubbed: the peak is reset before the contender and read after it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: calls.append("read") or 42)
    work = lambda: calls.append("work") or 1.5  # noqa: E731
    assert bench.with_peak_memory(torch.device("cuda"), work) == (1.5, 42)
    assert calls == ["reset", "work", "read"]
    assert bench.with_peak_memory(torch.device("cpu"), work) == (1.5, None)


TINY_SAMPLE = ROOT.parent / "shared" / "data" / "tiny-imagenet-200-sample"


def test_reference_pool_decodes_a_jpeg_per_access_for_tiny_imagenet(bench, monkeypatch):
    """Tiny-ImageNet's reference reads JPEG files: each access decodes one, quality 75."""
    loop = sys.modules["reference_loop"]
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (3, 1, 1, 3), dtype=np.uint8)
    hwc = np.ascontiguousarray(np.broadcast_to(colours, (3, 64, 64, 3)))  # flat: JPEG-friendly
    arrays, jpegs = loop.ImagePool(hwc, jpeg=False), loop.ImagePool(hwc, jpeg=True)
    opened = []
    real_open = loop.Image.open
    monkeypatch.setattr(loop.Image, "open", lambda f: opened.append(f) or real_open(f))
    for _ in range(2):
        decoded = np.array(jpegs.image(1), dtype=np.int32)
        assert np.abs(decoded - hwc[1]).max() <= 3
    assert len(opened) == 2 and len(jpegs.encoded) == 1  # encoded once, decoded every time
    assert np.array_equal(np.array(arrays.image(1)), hwc[1])
    assert len(opened) == 2  # array pools never decode
    if TINY_SAMPLE.exists():  # the same quantisation tables as the release's files
        release = next(TINY_SAMPLE.rglob("*.JPEG"))
        ours = real_open(io.BytesIO(jpegs.encoded[1]))
        assert ours.quantization == real_open(release).quantization
