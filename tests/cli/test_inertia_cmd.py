"""``fedlab inertia report`` from the outside: on real runs, for people and for scripts."""

import csv
import json

import pytest
from typer.testing import CliRunner

from fedlab_cli.cli import app

SPEC = """
data: {dataset: digits, num_clients: 3, alpha: 0.5, train_per_client: 20, test_per_client: 10}
model: {name: small_cnn}
federation: {rounds: 4}
training: {local_epochs: 1, batch_size: 10}
inertia: {ref_rounds: [1]}
method: {name: fedbn}
"""
LAYERS = ["features.0.weight", "features.3.weight", "features.7.weight", "classifier.weight"]


def invoke(*args, width=120):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A fedbn and a fedavg run of the same short spec."""
    root = tmp_path_factory.mktemp("inertia")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    out = {}
    for method in ("fedbn", "fedavg"):
        out[method] = root / method
        result = invoke(
            "run", spec, "--set", f"method.name={method}", "--set", f"output.dir={out[method]}",
            "--quiet",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return out


def final_cos_ref(run_dir):
    with open(run_dir / "inertia.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {r["layer"]: float(r["cos_ref"]) for r in rows if r["round"] == "3"}


def test_report_prints_heatmap_and_table(runs):
    result = invoke("inertia", "report", runs["fedbn"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Inertia heatmap — cos_ref vs round 1" in out
    heat_rows = [i for i, line in enumerate(out.splitlines()) if line.split()[:1] == [LAYERS[0]]]
    assert heat_rows, out
    lines = out.splitlines()
    # heatmap rows in network order, right after each other
    assert [lines[heat_rows[0] + k].split()[0] for k in range(4)] == LAYERS
    finals = final_cos_ref(runs["fedbn"])
    for layer in LAYERS:
        row = next(line for line in lines if line.startswith(f"│ {layer}"))
        assert f"{finals[layer]:.4f}" in row
    middle = (finals["features.3.weight"] + finals["features.7.weight"]) / 2
    mean_row = next(line for line in lines if "middle mean" in line)
    assert f"{middle:.4f}" in mean_row


def test_two_runs_get_a_difference_view(runs):
    result = invoke("inertia", "report", runs["fedbn"], runs["fedavg"], width=140)
    assert result.exit_code == 0, result.output
    assert "Difference — fedavg − fedbn (cos_ref), layers aligned by name" in result.stdout
    data = json.loads(invoke("inertia", "report", runs["fedbn"], runs["fedavg"], "--json").stdout)
    assert [r["label"] for r in data["runs"]] == ["fedbn", "fedavg"]
    fedavg = {row["layer"]: row for row in data["runs"][1]["layers"]}
    finals = final_cos_ref(runs["fedavg"])
    for layer in LAYERS:
        assert fedavg[layer]["final_cos_ref"] == pytest.approx(finals[layer], rel=1e-9)


def test_csv_and_metric_choice(runs):
    result = invoke("inertia", "report", runs["fedbn"], "--csv", "--metric", "rel_update")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    with open(runs["fedbn"] / "inertia.csv", newline="") as handle:
        last = {r["layer"]: r for r in csv.DictReader(handle) if r["round"] == "3"}
    for row in rows[:-1]:
        assert row["metric"] == "rel_update"
        assert float(row["final"]) == pytest.approx(float(last[row["layer"]]["rel_update"]))
    assert rows[-1]["layer"] == "middle_mean"


def test_png_is_written(runs, tmp_path):
    out = tmp_path / "inertia.png"
    result = invoke("inertia", "report", runs["fedbn"], runs["fedavg"], "--png", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_not_a_run_dir_and_missing_inertia_are_one_line_errors(runs, tmp_path):
    result = invoke("inertia", "report", tmp_path)
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"error: {str(tmp_path)!r} is not a run directory (no spec.yaml)"
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("spec.yaml", "partition.json"):
        (bare / name).write_text((runs["fedbn"] / name).read_text())
    result = invoke("inertia", "report", runs["fedbn"], bare)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {str(bare)!r} has no inertia data (no inertia.csv)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "nope"], "--metric: unknown metric 'nope'"),
        (["--threshold", "2"], "--threshold: a cosine between -1 and 1 (got 2.0)"),
        (["--ref-round", "5"], "--ref-round: fedbn recorded reference rounds [1], not 5"),
        (["--csv", "--json"], "--csv and --json: give one of them"),
    ],
)
def test_bad_options_are_one_line_errors(runs, args, message):
    result = invoke("inertia", "report", runs["fedbn"], *args)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and message in result.output


def _copy_run(runs, tmp_path):
    import shutil

    return shutil.copytree(runs["fedbn"], tmp_path / "copy")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: _replace_cell(text, 3, 5, "abc"),
         "line 3 is damaged: ValueError: could not convert string to float: 'abc'"),
        (lambda text: "\x00\xff garbage\n" * 3, "line 1 is damaged: ValueError: not the inertia"),
    ],
    ids=["non-numeric", "garbage"],
)  # fmt: skip
def test_damaged_inertia_csv_is_one_line_exit_2(runs, tmp_path, damage, message):
    run = _copy_run(runs, tmp_path)
    path = run / "inertia.csv"
    path.write_text(damage(path.read_text()), errors="surrogateescape")
    result = invoke("inertia", "report", run)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {message}")


def _replace_cell(text: str, line: int, column: int, value: str) -> str:
    lines = text.splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "target, message",
    [
        (lambda t: t, "--png: is a directory; give a file name"),
        (lambda t: t / "fig.gif", "--png: unsupported file type; use one of .png, .pdf, .svg"),
        (lambda t: t / "nope" / "fig.png", "--png: no such directory"),
    ],
)
def test_bad_png_targets_are_one_line_exit_2(runs, tmp_path, target, message):
    result = invoke("inertia", "report", runs["fedbn"], "--png", target(tmp_path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


def test_png_to_a_read_only_place_is_one_line(runs, tmp_path, monkeypatch):
    import errno

    from fedlab_cli import paths

    def read_only(**_):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(paths.tempfile, "mkdtemp", read_only)
    result = invoke("inertia", "report", runs["fedbn"], "--png", tmp_path / "fig.png")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --png: '{tmp_path}' is on a read-only filesystem (got '{tmp_path / 'fig.png'}')"
    )


@pytest.mark.parametrize("suffix, magic", [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_pdf_and_svg_are_written_too(runs, tmp_path, suffix, magic):
    out = tmp_path / f"fig.{suffix}"
    result = invoke("inertia", "report", runs["fedbn"], "--png", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[: len(magic)] == magic
