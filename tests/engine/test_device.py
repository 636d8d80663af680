"""A missing GPU is said out loud, never silently worked around."""

import torch
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.engine.device import resolve_device


def test_cuda_asked_but_absent_falls_back_with_a_notice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, notice = resolve_device("cuda")
    assert device.type == "cpu" and "no CUDA GPU is available" in notice
    assert resolve_device("auto") == (torch.device("cpu"), None)
    assert resolve_device("cpu") == (torch.device("cpu"), None)


def test_cuda_is_used_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == (torch.device("cuda"), None)
    assert resolve_device("cpu") == (torch.device("cpu"), None)


def test_run_prints_the_notice_and_records_the_device(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "data: {dataset: digits, num_clients: 2, train_per_client: 10, test_per_client: 10}\n"
        "model: {name: small_cnn}\nfederation: {rounds: 1}\nmethod: {name: fedavg}\n"
        "engine: {device: cuda}\n"
    )
    result = CliRunner().invoke(app, ["run", str(spec), "--set", f"output.dir={out}", "--quiet"])
    assert result.exit_code == 0
    assert "WARNING" in result.stderr and "no CUDA GPU is available" in result.stderr
    assert '"device": "cpu"' in (out / "summary.json").read_text()
