"""``fedlab sweep presets/paper/lips_table2.yaml``, shrunk: the paper's numbers beside ours."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from support import assert_one_line_refusal, one_torch_thread
from typer.testing import CliRunner

from fedlab_cli.cli import app

TABLE2 = str(Path(__file__).resolve().parents[2] / "presets" / "paper" / "lips_table2.yaml")
SHRINK = [
    "--rounds", "2", "--clients", "4", "--seeds", "0,1", "--synthetic",
    "--only", "method=FedBN,LIPS", "--only", "setting=C10 α=0.1",
    # CPU-test sized: digits in place of the synthetic CIFAR-10 (VGG6 takes a minute a run)
    "--set", "data.dataset=digits", "--set", "model.name=small_cnn",
    "--set", "training.local_epochs=1", "--set", "data.train_per_client=20",
    "--set", "data.test_per_client=20",
]  # fmt: skip


def test_shrunk_table_two_prints_paper_ours_and_difference(tmp_path):
    out = tmp_path / "table2"
    with one_torch_thread():
        result = CliRunner().invoke(app, ["sweep", TABLE2, "--out", str(out), *SHRINK])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "LIPS Table 2" in text and "[SHRUNK]" in text
    assert "paper 85.83±1.28" in text and "paper 86.21±1.66" in text  # FedBN, LIPS at C10 0.1
    paper = json.loads((out / "paper.json").read_text())
    assert paper["shrunk"] is True and paper["shortcuts"] == {"rounds": 2, "clients": 4}
    index = json.loads((out / "sweep.json").read_text())["runs"]
    for cell in paper["cells"]:
        dirs = [r["dir"] for r in index if r["labels"] == [cell["row"], cell["column"]]]
        summaries = [json.loads((out / d / "summary.json").read_text()) for d in dirs]
        finals = [s["final_accuracy"] for s in summaries]
        assert cell["seeds"] == 2 and cell["ours"] == statistics.fmean(finals)
        assert cell["ours_std"] == statistics.stdev(finals)
        assert cell["diff"] == cell["ours"] - cell["paper"]
        assert f"ours {cell['ours']:.2f}±{cell['ours_std']:.2f}" in text
        assert f"Δ {cell['diff']:+.2f}" in text


def test_unknown_only_label_is_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["sweep", TABLE2, "--out", str(tmp_path / "t"), "--only", "method=FedNope"]
    )
    assert_one_line_refusal(result, "--only method: no setting 'FedNope'")
    assert not (tmp_path / "t").exists()
