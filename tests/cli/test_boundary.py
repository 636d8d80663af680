"""The error boundary: one line on stderr for every failure, a crash report for the unexpected,
the traceback only on request; --version."""

import re
from importlib import metadata

import pytest
from typer.testing import CliRunner

import fedlab_cli.cli.run_cmd as run_cmd
from fedlab_cli.cli import app
from fedlab_cli.errors import TrainingDivergedError

SPEC = """
data: {dataset: digits, num_clients: 3, alpha: 0.5, train_per_client: 20, test_per_client: 10}
model: {name: small_cnn}
federation: {rounds: 2}
training: {local_epochs: 1, batch_size: 10}
method: {name: fedavg}
engine: {device: cpu}
"""

CRASH = re.compile(
    r"error: fedlab run failed unexpectedly \(RuntimeError: disk controller on fire\); "
    r"full report in (?P<path>\S+\.log); for the traceback rerun with "
    r"`fedlab --debug run \.\.\.` or FEDLAB_DEBUG=1"
)


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env or {})


def boom(*args, **kwargs):
    raise RuntimeError("disk controller on fire")


def test_an_unexpected_error_is_one_line_with_a_crash_report(spec_file, tmp_path, monkeypatch):
    monkeypatch.setattr(run_cmd, "load_spec", boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = invoke("run", spec_file)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    match = CRASH.fullmatch(lines[0])
    assert match, lines[0]
    report = match["path"]
    assert report.startswith(str(tmp_path))  # no run dir yet: the temp dir
    with open(report) as handle:
        text = handle.read()
    assert "Traceback (most recent call last)" in text and "disk controller on fire" in text
    assert f"command: fedlab run {spec_file}" in text


def test_a_crash_during_training_reports_into_the_run_dir(spec_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(run_cmd, "run", boom)
    result = invoke("run", spec_file, "--set", f"output.dir={out}", "--quiet")
    assert result.exit_code == 1
    match = CRASH.fullmatch(result.stderr.strip())
    assert match and match["path"].startswith(str(out / "fedlab-crash-"))
    with open(match["path"]) as handle:
        assert "Traceback" in handle.read()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_lets_the_traceback_through(spec_file, monkeypatch, how):
    monkeypatch.setattr(run_cmd, "load_spec", boom)
    if how == "flag":
        result = invoke("--debug", "run", spec_file)
    else:
        result = invoke("run", spec_file, env={"FEDLAB_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)
    assert "failed unexpectedly" not in result.stderr


def test_diverged_training_stays_exit_1_one_line(spec_file, monkeypatch, tmp_path):
    def diverge(*args, **kwargs):
        raise TrainingDivergedError("round 0: loss is nan")

    monkeypatch.setattr(run_cmd, "run", diverge)
    result = invoke("run", spec_file, "--set", f"output.dir={tmp_path / 'o'}", "--quiet")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: round 0: loss is nan (summary.json records status diverged)"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--bogus"], "error: No such option: --bogus (see `fedlab run --help`)"),
        (["nosuch"], "error: No such command 'nosuch'. (see `fedlab --help`)"),
        (["compare", "fedavg", "--clients", "many"], "error: Invalid value for '--clients'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    result = CliRunner().invoke(app, args, prog_name="fedlab")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_version_comes_from_the_package_metadata():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"fedlab-cli {metadata.version('fedlab-cli')}\n"


def test_warnings_are_one_line(spec_file, tmp_path, monkeypatch):
    import warnings

    def warn_then_fail(*args, **kwargs):
        warnings.warn("dataset cache x is stale\nrebuilding it", UserWarning, stacklevel=1)
        raise TrainingDivergedError("stop")

    monkeypatch.setattr(run_cmd, "run", warn_then_fail)
    result = invoke("run", spec_file, "--set", f"output.dir={tmp_path / 'o'}", "--quiet")
    assert result.stderr.strip().splitlines() == [
        "WARNING: dataset cache x is stale rebuilding it",
        "error: stop (summary.json records status diverged)",
    ]
