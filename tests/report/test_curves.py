"""The plotted arrays are the runs' metrics: each band is numpy's mean and std of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import one_torch_thread
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.errors import FedlabError
from fedlab_cli.report.curves import band, curves, run_points

SMALL = ["--seeds", "0,1", "--rounds", "3", "--clients", "4", "--set", "training.local_epochs=1"]


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plot") / "cmp"
    with one_torch_thread():
        result = CliRunner().invoke(
            app, ["compare", "fedavg", "fedbn", "--preset", "quickstart", "--out", str(out), *SMALL]
        )
    assert result.exit_code == 0, result.output
    assert f"fedlab plot {out}" in result.stdout  # the hint at the end
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("x_axis", ["round", "uplink_bits"])
def test_band_is_mean_and_std_of_the_runs(compare_dir, x_axis):
    series = {s.label: s for s in curves([compare_dir], "acc_agg", x_axis)}
    assert sorted(series) == ["fedavg", "fedbn"]
    for method, s in series.items():
        runs = [metrics(compare_dir / method / f"seed{seed}") for seed in (0, 1)]
        acc = np.array([[r["acc_agg"] for r in run] for run in runs])
        np.testing.assert_array_equal(s.rounds, [0, 1, 2])
        np.testing.assert_allclose(s.mean, acc.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(s.std, acc.std(axis=0, ddof=1), rtol=0, atol=1e-12)
        if x_axis == "uplink_bits":
            bits = np.array([np.cumsum([r["uplink_bits"] for r in run]) for run in runs])
            np.testing.assert_allclose(s.x, bits.mean(axis=0))
            assert s.x[0] > 0 and np.all(np.diff(s.x) > 0)
        else:
            np.testing.assert_array_equal(s.x, [0, 1, 2])
        assert {p.name for p in s.runs} == {"seed0", "seed1"}


def test_a_run_dir_is_one_line_without_band(compare_dir):
    run = compare_dir / "fedbn" / "seed1"
    (s,) = curves([run], "loss")
    assert s.std is None and s.label == "seed1"
    np.testing.assert_array_equal(s.mean, [r["loss"] for r in metrics(run)])


def test_unevaluated_rounds_are_skipped_and_bits_still_add_up():
    records = [
        {"round": 0, "acc_agg": None, "uplink_bits": 10.0},
        {"round": 1, "acc_agg": 50.0, "uplink_bits": 10.0},
        {"round": 2, "acc_agg": None, "uplink_bits": 5.0},
        {"round": 3, "acc_agg": 70.0, "uplink_bits": 5.0},
    ]
    points = run_points(Path("r"), records, "acc_agg", "uplink_bits")
    assert points.rounds.tolist() == [1, 3] and points.x.tolist() == [20.0, 30.0]
    shorter = run_points(Path("s"), records[:2], "acc_agg", "round")
    joined = band("m", [points, shorter])  # only the rounds both recorded
    assert joined.rounds.tolist() == [1] and joined.mean.tolist() == [50.0]


def test_unknown_metric_names_the_known_ones(compare_dir):
    with pytest.raises(FedlabError, match=r"--metric: .* records no 'acc_nope' .*acc_agg"):
        curves([compare_dir], "acc_nope")
