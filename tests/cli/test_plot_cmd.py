"""``fedlab plot``: a figure file or a terminal chart; bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_one_line_refusal, finished_run
from typer.testing import CliRunner

from fedlab_cli.cli import app


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("plot") / "run", rounds=3)


def test_png_is_written(run_dir, tmp_path):
    target = tmp_path / "curves.png"
    result = CliRunner().invoke(app, ["plot", str(run_dir), "--png", str(target)])
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_terminal_chart_names_each_line(run_dir):
    result = CliRunner().invoke(app, ["plot", str(run_dir), str(run_dir), "--x", "uplink_bits"])
    assert result.exit_code == 0, result.output
    assert "acc_agg against cumulative uplink bits" in result.stdout
    assert result.stdout.count("run: final") == 2


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--x", "bits"], "--x"),
        (["--metric", "acc"], "--metric"),
        (["--png", "out.gif"], "--png"),
    ],
)
def test_bad_input_is_one_line(run_dir, argv, fragment):
    result = CliRunner().invoke(app, ["plot", str(run_dir), *argv])
    assert_one_line_refusal(result, fragment)


def test_not_a_run_dir_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert_one_line_refusal(result, "neither a run dir")
