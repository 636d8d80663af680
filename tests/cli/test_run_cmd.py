"""``fedlab run`` from the outside: exit codes, one-line errors, nothing half-written."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fedlab_cli.cli import app

SPEC = """
data: {dataset: digits, num_clients: 3, alpha: 0.5, train_per_client: 20, test_per_client: 10}
model: {name: small_cnn}
federation: {rounds: 2}
training: {local_epochs: 1, batch_size: 10}
method: {name: fedbn}
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_run_writes_the_run_dir_and_prints_json(spec_file, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "run", spec_file, "--set", f"output.dir={out}", "--set", "engine.device=cpu", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "fedbn" and summary["rounds"] == 2
    # auto resolved on a CPU for an 8x8 small CNN: batched clients, channels-last layout
    assert summary["engine"] == {
        "strategy": "vectorized",
        "autocast": "none",
        "layout": "channels_last",
    }
    assert summary.pop("run_dir") == str(out)
    assert json.loads((out / "summary.json").read_text()) == summary
    for name in ("spec.yaml", "partition.json", "metrics.jsonl", "checkpoints/round_0001.pt"):
        assert (out / name).exists(), name


def test_resume_of_a_complete_run_says_so(spec_file, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", spec_file, "--set", f"output.dir={out}", "--quiet").exit_code == 0
    again = invoke("run", "--resume", out)
    assert again.exit_code == 0 and "already complete" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "training.lrr=0.1"], "training.lrr: unknown key"),
        (["--set", "training.lr=abc"], "training.lr: Input should be a valid number"),
        (["--set", "data.alpha=0"], "data.alpha: Input should be greater than or equal to 0.01"),
        (["--set", "data.num_clients=0"], "data.num_clients: Input should be greater than or"),
        (["--set", "method.name=nope"], "method.name: unknown method 'nope'"),
        (["--set", "model.name=nope"], "model.name: unknown model"),
        (["--set", "data.dataset=nope"], "data.dataset: unknown dataset"),
        (["--set", "data.test_per_client=100000"], "data.test_per_client: 100000 exceeds"),
        (["--set", "model.name=vgg6"], "model.name: VGG6 does not accept the 1x8x8 images"),
        (
            ["--set", "data.dataset=cifar10", "--set", "data.download=false"],
            "cifar10 files missing",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(spec_file, tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke(
        "run",
        spec_file,
        "--set",
        f"output.dir={out}",
        "--set",
        f"data.root={tmp_path / 'd'}",
        *args,
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not out.exists()


def test_malformed_yaml_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dataset: digits\nmodel: x\n")
    result = invoke("run", bad)
    assert result.exit_code == 2 and "malformed YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_output_dir_is_refused(spec_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = invoke("run", spec_file, "--set", f"output.dir={out}")
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_real_entry_point_prints_no_traceback(tmp_path):
    """The installed console script, in a fresh process: one line, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "fedlab_cli", "run", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: spec: no such file '{tmp_path / 'missing.yaml'}'"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_json_names_the_run_dir(spec_file, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", spec_file, "--set", f"output.dir={out}", "--json")
    assert json.loads(result.stdout)["run_dir"] == str(out)
    again = invoke("run", "--resume", out, "--json")  # a complete run, read back
    assert json.loads(again.stdout)["run_dir"] == str(out)


@pytest.mark.parametrize(
    "where, message",
    [
        (lambda t: t / "file" / "run", "is a file, not a directory"),
        (lambda t: t / "file", "exists and is a file, not a directory"),
        (lambda t: "/proc/fedlab-run", "/proc is a kernel interface, not storage"),
        (lambda t: "/sys/fedlab-run", "/sys is a kernel interface, not storage"),
    ],
    ids=["under-a-file", "a-file", "proc", "sys"],
)
def test_unusable_output_dirs_are_refused_before_work(spec_file, tmp_path, where, message):
    (tmp_path / "file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("run", spec_file, "--set", f"output.dir={where(tmp_path)}")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: output.dir: ") and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_second_writer_is_refused_naming_the_owner(spec_file, tmp_path):
    from fedlab_cli.engine.lock import RunLock

    out = tmp_path / "out"
    assert invoke("run", spec_file, "--set", f"output.dir={out}", "--quiet").exit_code == 0
    (out / "summary.json").unlink()  # an unfinished run, as if it were still training
    metrics = (out / "metrics.jsonl").read_text()
    with RunLock(out, "--resume"):  # held by "the other process" (this pid)
        result = invoke("run", "--resume", out)
        fresh = invoke("run", spec_file, "--set", f"output.dir={out}")
    assert result.exit_code == 2 and fresh.exit_code == 2
    assert result.stderr.strip().startswith(f"error: --resume: '{out}' is in use by pid ")
    assert fresh.stderr.strip().startswith(f"error: output.dir: '{out}' is in use by pid ")
    assert (out / "metrics.jsonl").read_text() == metrics  # nothing interleaved or truncated
    assert not (tmp_path / ".out.lock").exists()


def _send_after_round(monkeypatch, round_index, *signals):
    """Deliver ``signals`` to this process right after ``round_index`` is logged."""
    import os

    from fedlab_cli.engine.session import RunSession

    real = RunSession.on_round

    def on_round(self, record):
        real(self, record)
        if record.round == round_index:
            for number in signals:
                os.kill(os.getpid(), number)

    monkeypatch.setattr(RunSession, "on_round", on_round)


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_checkpoints_the_round_and_resume_finishes_identically(
    spec_file, tmp_path, monkeypatch, signame, code
):
    import signal

    from support import strip_time

    full = tmp_path / "full"
    assert invoke("run", spec_file, "--set", f"output.dir={full}", "--quiet").exit_code == 0
    out = tmp_path / "out"
    sets = ["--set", f"output.dir={out}", "--set", "federation.rounds=2"]
    with monkeypatch.context() as patch:
        _send_after_round(patch, 0, getattr(signal, signame))
        result = invoke("run", spec_file, *sets, "--quiet")
    assert result.exit_code == code
    assert result.stderr.strip().splitlines()[-1] == (
        f"stopped after round 0 (checkpoint saved); continue with `fedlab run --resume {out}`"
    )
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["round_0000.pt"]
    assert not (out / "summary.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = invoke("run", "--resume", out, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert strip_time(metrics) == strip_time(reference)


def test_a_second_ctrl_c_aborts_at_once(spec_file, tmp_path, monkeypatch):
    import signal

    out = tmp_path / "out"
    _send_after_round(monkeypatch, 0, signal.SIGINT, signal.SIGINT)
    result = invoke("run", spec_file, "--set", f"output.dir={out}", "--quiet")
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted after round 0; continue with `fedlab run --resume {out}`"
    )
    assert not (out / "checkpoints").exists()  # no clean stop: no extra checkpoint


def test_sigterm_while_data_loads_aborts_at_once_with_143(spec_file, tmp_path, monkeypatch):
    import os
    import signal

    from fedlab_cli.engine.session import RunSession

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal should have stopped us")

    monkeypatch.setattr(RunSession, "start", terminated)
    result = invoke("run", spec_file, "--set", f"output.dir={tmp_path / 'out'}", "--quiet")
    assert result.exit_code == 143
    assert result.stderr.strip() == "error: interrupted before training started"
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.lock").exists()
