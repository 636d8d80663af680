"""A paper table beside ours: published values parsed, our means and differences computed."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from fedlab_cli.engine.grid import points
from fedlab_cli.engine.sweep import plan_sweep, synthetic_stand_in
from fedlab_cli.engine.sweep_file import load_sweep_file
from fedlab_cli.errors import FedlabError
from fedlab_cli.report.compare import RunResult
from fedlab_cli.report.paper import cells, published
from fedlab_cli.spec.load import read_yaml

PAPER = Path(__file__).resolve().parents[2] / "presets" / "paper"
TABLES = {  # table: (cells x seeds, distinct runs once shrunk, a published cell)
    "lips_table1.yaml": (18, 18, ("A_fix", "TinyImageNet", 36.86, 0.08)),
    "lips_table2.yaml": (189, 189, ("LIPS", "C100 α=0.1", 47.84, 0.47)),
    "lips_table3.yaml": (36, 12, ("LIPS", "C10 N=300", 78.61, None)),  # --clients: N collapses
    "lips_table4.yaml": (48, 48, ("Random", "C100 α=0.1", 50.14, 0.47)),
    "lips_table5.yaml": (36, 36, ("original init", "C10 α=0.1", 87.10, 1.38)),
    "lips_table6.yaml": (18, 18, ("FedBN", "ResNet6", 40.44, 0.41)),
    "lips_table7.yaml": (36, 36, ("w/ local sparsity", "Tiny α=0.5", 22.18, 0.43)),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_paper_table_plans_on_synthetic_stand_ins(name, tmp_path):
    path = PAPER / name
    sweep = load_sweep_file(path, read_yaml(path))
    plan = plan_sweep(
        sweep.base, points(sweep.axes), sweep.seeds, tmp_path, ["federation.rounds=3",
        "data.num_clients=4"], transform=synthetic_stand_in,
    )  # fmt: skip
    runs, distinct, (row, column, value, std) = TABLES[name]
    assert len(plan) == runs and len({r.path for r in plan}) == distinct
    assert all(r.resolved.spec.data.dataset.startswith("synthetic_") for r in plan)
    assert all(r.resolved.spec.federation.rounds == 3 for r in plan)
    values = sweep.paper["values"]
    labels = {a.name: [s.label for s in a.settings] for a in sweep.axes}
    for r in labels[sweep.paper["rows"]]:  # a published number for every cell
        assert set(values[r]) == set(labels[sweep.paper["columns"]]), r
    assert published(values[row][column]) == (value, std)


def test_published_values_parse():
    assert published("86.21±1.66") == (86.21, 1.66)
    assert published("74.78 (+2.09)") == (74.78, None)
    assert published(72.69) == (72.69, None)
    assert published(None) == (None, None)
    with pytest.raises(FedlabError, match=r"paper\.values"):
        published("n/a")


def result(label: str, seed: int, final: float) -> RunResult:
    return RunResult(label, seed, final, final, "acc_agg", 1.0, "r", (final,))


def test_cells_hold_our_mean_std_and_the_difference():
    paper = {"rows": "m", "columns": "s", "values": {"A": {"x": "50.00±1.00", "y": 60}}}
    labels = {"A, x": ("A", "x"), "A, y": ("A", "y"), "B, x": ("B", "x"), "B, y": ("B", "y")}
    results = [result("A, x", 0, 40.0), result("A, x", 1, 44.0), result("B, y", 0, 10.0)]
    found = {(c.row, c.column): c for c in cells(paper, ["m", "s"], labels, results)}
    ax = found[("A", "x")]
    assert (ax.paper, ax.paper_std, ax.ours, ax.seeds) == (50.0, 1.0, 42.0, 2)
    assert ax.ours_std == pytest.approx(statistics.stdev([40.0, 44.0]))
    assert ax.diff == pytest.approx(-8.0)
    assert found[("A", "y")].ours is None and found[("A", "y")].diff is None  # no run finished
    assert found[("B", "y")].paper is None and found[("B", "y")].ours == 10.0
    with pytest.raises(FedlabError, match=r"paper: rows and columns"):
        cells({**paper, "rows": "nope"}, ["m", "s"], labels, results)
