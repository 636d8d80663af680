"""The inertia report on hand-written inertia.csv files: parsing, onsets, alignment, rendering."""

import json
import math
import re

import numpy as np
import pytest
from rich.console import Console

from fedlab_cli.errors import FedlabError
from fedlab_cli.report.inertia import (
    bucketed,
    buckets,
    difference,
    load_run,
    load_runs,
    metric_scale,
    onset,
    report,
    summarize,
    to_csv,
    to_json,
    write_png,
)

LABEL = len("block.1.weight") + 8  # the layer name column, a space, the role column
HEADER = "round,layer,role,ref_round,cos_ref,cos_prev,rel_update,grad_norm\n"


def make_run(path, method, table, ref_round=1):
    """A run dir whose inertia.csv holds ``table[layer] = (role, [cos_ref per round])``."""
    path.mkdir(parents=True)
    (path / "spec.yaml").write_text(f"method:\n  name: {method}\n")
    (path / "partition.json").write_text("{}")
    lines = [HEADER]
    rounds = len(next(iter(table.values()))[1])
    for t in range(rounds):
        for layer, (role, values) in table.items():
            cos = "" if math.isnan(values[t]) else repr(values[t])
            lines.append(f"{t},{layer},{role},{ref_round},{cos},0.99,{0.1 / (t + 1)},{t + 1.0}\n")
    (path / "inertia.csv").write_text("".join(lines))
    return path


NAN = math.nan
FEDBN = {
    "conv1.weight": ("first", [NAN, 1.0, 0.90, 0.80, 0.70]),
    "block.0.weight": ("middle", [NAN, 1.0, 0.97, 0.96, 0.96]),
    "block.1.weight": ("middle", [NAN, 1.0, 0.94, 0.96, 0.98]),
    "fc.weight": ("last", [NAN, 1.0, 0.50, 0.40, 0.30]),
}


def test_load_reads_values_in_network_order_with_undefined_as_nan(tmp_path):
    run = load_run(make_run(tmp_path / "a", "fedbn", FEDBN))
    assert run.method == "fedbn" and run.layers == list(FEDBN)
    assert run.roles == {name: role for name, (role, _) in FEDBN.items()}
    assert run.rounds.tolist() == [0, 1, 2, 3, 4] and run.ref_rounds == [1]
    cos = run.cos_ref[1]
    assert math.isnan(cos[0, 0]) and cos[2, 2] == 0.94
    assert run.other["rel_update"][1, 3] == pytest.approx(0.1 / 4)
    assert run.other["grad_norm"][0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    "values, expected",
    [
        ([NAN, 1.0, 0.96, 0.94, 0.97, 0.98], 4),  # dips below at round 3: onset after it
        ([NAN, 1.0, 0.99, 0.98], 1),  # above from the reference round on
        ([NAN, 1.0, 0.99, 0.90], None),  # ends below: never inert
        ([NAN, 1.0, 0.95, 0.96], 3),  # "above" is strict: 0.95 is not above 0.95
    ],
)
def test_onset(values, expected):
    assert onset(np.array(values), np.arange(len(values)), 0.95) == expected


def test_table_rows_and_the_middle_layer_mean(tmp_path):
    run = load_run(make_run(tmp_path / "a", "fedbn", FEDBN))
    rows = {s.layer: s for s in summarize(run, "cos_ref", 1, 0.95)}
    assert list(rows) == [*FEDBN, "middle_mean"]
    assert rows["conv1.weight"].final_cos_ref == 0.70 and rows["conv1.weight"].onset is None
    assert rows["block.0.weight"].onset == 1
    assert rows["block.1.weight"].onset == 3  # 0.94 at round 2
    mid = rows["middle_mean"]
    assert mid.final_cos_ref == pytest.approx((0.96 + 0.98) / 2)
    # the mean curve is 1, 0.955, 0.96, 0.97: above 0.95 from the reference round on
    assert mid.onset == 1
    grad = {s.layer: s for s in summarize(run, "grad_norm", 1, 0.95)}
    assert grad["fc.weight"].final == 5.0 and grad["fc.weight"].final_cos_ref == 0.30


def test_buckets_fit_the_width_and_average_their_rounds():
    groups = buckets(np.arange(10), 4)
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    matrix = np.array([[NAN, 1, 2, 3, 4, 5, 6, 7, 8, 9.0]])
    assert bucketed(matrix, groups).tolist() == [[1.5, 4.0, 6.5, 8.5]]  # NaN ignored
    assert len(buckets(np.arange(3), 50)) == 3  # never more buckets than rounds


def test_the_cosine_scale_orders_levels_and_spreads_near_one():
    values = np.array([0.9, 0.99, 0.999, 0.9999, 1.0])
    scale = metric_scale("cos_ref", values)
    levels = [scale.level(v) for v in values]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == len(scale.colours) - 1
    assert len(set(levels[:4])) == 4  # each "nine" gets its own colour; 1.0 shares the top
    assert scale.level(NAN) is None


def test_monochrome_heatmap_rows_follow_network_order(tmp_path):
    run = load_run(make_run(tmp_path / "a", "fedbn", FEDBN))
    console = Console(width=80, color_system=None)
    text = render(report([run], console)[:3], console)
    lines = text.splitlines()
    rows = [next(i for i, line in enumerate(lines) if line.startswith(name)) for name in FEDBN]
    assert rows == sorted(rows)
    fc = lines[rows[3]]
    # 5 rounds, 3 characters each: undefined, then the reference (top level), then low values
    cells = fc[LABEL:].rstrip()
    assert cells.startswith("   ███") and len(cells) == 15 and "█" not in cells[6:]
    assert " " not in cells[6:]  # every defined round has a glyph
    assert "cos_ref vs round 1" in text and "blank: undefined" in text


def render(parts, console):
    with console.capture() as captured:
        for part in parts:
            console.print(part)
    return captured.get()


def test_difference_aligns_layers_by_name(tmp_path):
    base = make_run(tmp_path / "a", "fedbn", FEDBN)
    lips = {  # another order, one layer missing, one extra
        "fc.weight": ("last", [NAN, 1.0, 0.6, 0.5, 0.45]),
        "block.1.weight": ("middle", [NAN, 1.0, 0.90, 0.91, 0.92]),
        "conv1.weight": ("first", [NAN, 1.0, 0.91, 0.81, 0.71]),
        "extra.weight": ("middle", [NAN, 1.0, 0.5, 0.5, 0.5]),
    }
    runs = load_runs([base, make_run(tmp_path / "b", "lips", lips)])
    layers, rounds, diff = difference(runs[0], runs[1], "cos_ref", 1)
    assert layers == ["conv1.weight", "block.1.weight", "fc.weight"]  # base order, common only
    assert rounds.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(diff[:, 4], [0.71 - 0.70, 0.92 - 0.98, 0.45 - 0.30])
    assert np.isnan(diff[:, 0]).all()

    console = Console(width=100, color_system=None)
    text = render(report(runs, console), console)
    assert "Difference — lips − fedbn (cos_ref), layers aligned by name" in text
    assert "in one run only (not compared): block.0.weight, extra.weight" in text
    # side by side: the heatmap's fc.weight line carries both runs' cells
    heat = text.split("Difference")[0]
    fc = next(line for line in heat.splitlines() if line.startswith("fc.weight"))
    assert fc.count("█") == 6  # the reference round (level top), 3 chars wide, in both runs


def test_runs_are_stacked_when_the_terminal_is_narrow(tmp_path):
    many = {n: (role, [NAN, 1.0] + [0.9] * 38) for n, (role, _) in FEDBN.items()}
    runs = load_runs(
        [make_run(tmp_path / "a", "fedbn", many), make_run(tmp_path / "b", "lips", many)]
    )
    wide_console = Console(width=200, color_system=None)
    wide = render(report(runs, wide_console)[:2], wide_console)
    narrow_console = Console(width=40, color_system=None)
    narrow = render(report(runs, narrow_console)[:3], narrow_console)
    assert sum(line.startswith("fc.weight") for line in wide.splitlines()) == 1
    assert sum(line.startswith("fc.weight") for line in narrow.splitlines()) == 2
    assert max(len(line) for line in narrow.splitlines()) <= 40


def test_json_and_csv_carry_the_table(tmp_path):
    runs = load_runs([make_run(tmp_path / "a", "fedbn", FEDBN)])
    data = to_json(runs, "cos_ref", 1, 0.95)
    json.dumps(data, allow_nan=False)  # no NaN leaks into JSON
    layers = {row["layer"]: row for row in data["runs"][0]["layers"]}
    assert layers["block.1.weight"] == {
        "layer": "block.1.weight", "role": "middle", "final": 0.98, "final_cos_ref": 0.98,
        "onset": 3,
    }  # fmt: skip
    assert data["runs"][0]["values"]["fc.weight"] == [None, 1.0, 0.5, 0.4, 0.3]
    csv_lines = to_csv(runs, "rel_update", 1, 0.95).splitlines()
    assert csv_lines[0] == "run_dir,label,layer,role,metric,final,final_cos_ref,onset"
    fc = next(line for line in csv_lines if ",fc.weight," in line).split(",")
    assert fc[4:] == ["rel_update", "0.02", "0.3", ""]


def test_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FedlabError, match="is not a run directory"):
        load_run(tmp_path / "empty")
    run = make_run(tmp_path / "a", "fedbn", FEDBN)
    (run / "inertia.csv").unlink()
    with pytest.raises(FedlabError, match=r"has no inertia data \(no inertia.csv\)"):
        load_run(run)


def test_png_has_a_heatmap_and_line_panels(tmp_path):
    import matplotlib.image

    runs = load_runs(
        [make_run(tmp_path / "a", "fedbn", FEDBN), make_run(tmp_path / "b", "lips", FEDBN)]
    )
    out = tmp_path / "inertia.png"
    write_png(runs, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(out).shape
    assert width == 12 * 150 and height > width / 2  # two runs and the difference row


def test_monochrome_heatmap_cell_count_matches_buckets(tmp_path):
    table = {n: (role, [NAN, 1.0] + [0.9] * 198) for n, (role, _) in FEDBN.items()}
    run = load_run(make_run(tmp_path / "a", "fedbn", table))
    console = Console(width=80, color_system=None)
    text = render(report([run], console)[1:2], console)
    fc = next(line for line in text.splitlines() if line.startswith("fc.weight"))
    cells = fc[LABEL:].rstrip()
    # 200 rounds squeezed into the width: one character per bucket of about 4 rounds
    assert 40 <= len(cells) <= 80 - LABEL and set(cells) == {"█"}


def test_colour_cells_take_their_bin_colour(tmp_path):
    run = load_run(make_run(tmp_path / "a", "fedbn", FEDBN))
    console = Console(width=80, color_system="truecolor", force_terminal=True)
    heat = render(report([run], console)[1:2], console)
    fc = next(line for line in heat.splitlines() if line.startswith("fc.weight"))
    top = "48;2;253;231;37"  # the brightest colour: the reference round itself (cos 1)
    bottom = "48;2;68;1;84"  # the darkest: fc's 0.5, 0.4, 0.3 (1 − cos in the top eighth)
    assert fc.count(top) == 1 and fc.count(bottom) == 3
    conv = next(line for line in heat.splitlines() if line.startswith("conv1.weight"))
    assert bottom not in conv  # 0.9, 0.8, 0.7: brighter bins, and not all one bin
    assert len(set(re.findall(r"48;2;[0-9;]+", conv))) == 4  # the reference and 3 bins


def test_labels_tell_runs_of_one_method_apart(tmp_path):
    a = make_run(tmp_path / "x" / "run", "fedbn", FEDBN)
    b = make_run(tmp_path / "y" / "run", "fedbn", FEDBN)
    c = make_run(tmp_path / "lips", "lips", FEDBN)
    assert [r.label for r in load_runs([a, b, c])] == ["fedbn:run#1", "fedbn:run#2", "lips"]
