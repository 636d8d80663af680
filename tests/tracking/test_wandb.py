"""W&B offline: the run's history holds metrics.jsonl; a missing package is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support import assert_one_line_refusal
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession

SECTIONS = {
    "federation": {"rounds": 2},
    "training": {"local_epochs": 1},
    "output": {"loggers": ["wandb"], "wandb": {"project": "fedlab-test", "group": "g1"}},
}


def test_offline_history_equals_metrics_jsonl(make_spec, one_thread, monkeypatch):
    pytest.importorskip("wandb")
    from wandb_file import config, history, run_info

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    resolved = make_spec(**SECTIONS)
    run_dir = Path(resolved.spec.output.dir)
    session = RunSession.start(resolved, run_dir)
    run(session.federation, on_round=[session.on_round])
    session.finish()
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    run_id = (run_dir / "wandb_id").read_text().strip()
    assert files[0].name == f"run-{run_id}.wandb"
    rows = history(files[0])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["_step"] for r in rows] == [r["round"] for r in records]
    for row, record in zip(rows, records, strict=True):
        for key in ("loss", "acc_local", "acc_agg", "uplink_bits"):
            assert row[key] == pytest.approx(record[key], rel=1e-12), key
    settings = config(files[0])
    assert settings["data.num_clients"] == 4
    assert settings["method.name"] == "fedavg"
    info = run_info(files[0])
    assert info == {"project": "fedlab-test", "group": "g1", "name": "fedavg-seed0"}


def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for logger in ("wandb", "tensorboard"):
        extra = f"fedlab-cli[{logger}]"
        out = tmp_path / f"run-{logger}"
        result = CliRunner().invoke(
            app,
            [
                "run", "quickstart", "--set", f"output.dir={out}",
                "--set", f"output.loggers=[csv,{logger}]",
            ],
        )  # fmt: skip
        line = assert_one_line_refusal(result, "output.loggers")
        assert f"pip install '{extra}'" in line
        assert not out.exists()  # refused before anything was written or trained


def test_missing_package_in_a_compare_or_sweep_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for argv in (
        ["compare", "fedavg", "--preset", "quickstart", "--out", str(tmp_path / "c")],
        ["sweep", "quickstart", "--grid", "data.alpha=0.1,0.5", "--out", str(tmp_path / "s")],
    ):
        result = CliRunner().invoke(app, [*argv, "--set", "output.loggers=[tensorboard]"])
        assert_one_line_refusal(result, "fedlab-cli[tensorboard]")
    assert list(tmp_path.iterdir()) == []


def test_unknown_logger_is_one_line(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "quickstart", "--set", f"output.dir={out}", "--set", "output.loggers=[tb]"]
    )
    line = assert_one_line_refusal(result, "output.loggers")
    assert "'tb'" in line
    assert not out.exists()


def test_a_compare_groups_each_methods_seeds(tmp_path):
    from fedlab_cli.engine.compare import plan_compare

    plan = plan_compare(
        Path("presets/quickstart.yaml"), ["fedavg", "fedbn"], [0, 1], tmp_path / "cmp"
    )
    groups = {(p.method, p.seed): p.resolved.spec.output.wandb.group for p in plan}
    assert groups[("fedavg", 0)] == groups[("fedavg", 1)] == "cmp-fedavg"
    assert groups[("fedbn", 0)] == groups[("fedbn", 1)] == "cmp-fedbn"
    named = plan_compare(
        Path("presets/quickstart.yaml"), ["fedavg"], [0], tmp_path / "c2",
        overrides=["output.wandb.group=mine"],
    )  # fmt: skip
    assert named[0].resolved.spec.output.wandb.group == "mine"
