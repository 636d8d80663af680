"""Comparison statistics against hand computations, and the files they are written to.

The t quantiles and p-values are checked with closed forms that need no statistics library:
with 1 degree of freedom the t distribution is Cauchy (F(t) = 1/2 + atan(t)/π), with 2 it has
F(t) = 1/2 + t / (2·sqrt(2 + t²)).
"""

import csv
import io
import json
import math

import pytest
from rich.console import Console

from fedlab_cli.report.compare import (
    DASH,
    RunResult,
    client_wins,
    compare,
    comparison_table,
    results_csv,
    summary_csv,
    summary_markdown,
    write_files,
)


def result(
    method,
    seed,
    final,
    best=None,
    clients=(50.0, 60.0),
    wall=10.0,
    part="p",
    init="i",
    uplink_bpp=None,
    acc_global=None,
    variants=None,
):
    summary = {
        "method": method,
        "seed": seed,
        "final_accuracy": final,
        "best_accuracy": final + 1 if best is None else best,
        "final_metric": "acc_local" if method == "pfedsd" else "acc_agg",
        "wall_seconds": wall,
        "final_acc_clients": list(clients),
    }
    if uplink_bpp is not None:
        summary["uplink_bpp"] = uplink_bpp
    if acc_global is not None:
        summary["final"] = {"acc_global": acc_global}
    for name, value in (variants or {}).items():
        summary.setdefault("final", {})[f"acc_global_{name}"] = value
    init_sha = None if init is None else f"{init}{seed}"
    return RunResult.from_summary(summary, f"out/{method}/seed{seed}", init_sha, f"{part}{seed}")


def sample_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t_quantile_df2(q):
    """Solve 1/2 + t/(2 sqrt(2+t²)) = q for t."""
    r = 2 * q - 1
    return math.sqrt(2 * r * r / (1 - r * r))


def p_two_sided_df2(t):
    return 1 - abs(t) / math.sqrt(2 + t * t)


FEDAVG = [70.0, 72.5, 69.0]
FEDBN = [75.0, 74.0, 73.5]
LIPS = [76.0, 78.0, 74.5]


@pytest.fixture
def three_seeds():
    runs = []
    for method, finals in (("fedavg", FEDAVG), ("fedbn", FEDBN), ("lips", LIPS)):
        runs += [result(method, s, f, wall=10.0 + s) for s, f in enumerate(finals)]
    return runs


def test_mean_std_ci_p_equal_hand_computation(three_seeds):
    c = compare(three_seeds, ["fedavg", "fedbn", "lips"])
    assert c.baseline == "fedavg" and c.seeds == (0, 1, 2)
    for stats, finals in zip(c.methods, (FEDAVG, FEDBN, LIPS), strict=True):
        assert stats.final_mean == pytest.approx(sum(finals) / 3)
        assert stats.final_std == pytest.approx(sample_std(finals))
        assert stats.best_mean == pytest.approx(sum(finals) / 3 + 1)
        assert stats.wall_mean == pytest.approx(11.0)
    t975 = t_quantile_df2(0.975)
    assert t975 == pytest.approx(4.302653, abs=1e-6)  # the textbook table value
    for method, finals in (("fedbn", FEDBN), ("lips", LIPS)):
        d = [a - b for a, b in zip(finals, FEDAVG, strict=True)]
        mean, sd = sum(d) / 3, sample_std(d)
        paired = c.paired[method]
        assert paired.diff_mean == pytest.approx(mean)
        assert paired.ci_low == pytest.approx(mean - t975 * sd / math.sqrt(3))
        assert paired.ci_high == pytest.approx(mean + t975 * sd / math.sqrt(3))
        assert paired.p_value == pytest.approx(p_two_sided_df2(mean / (sd / math.sqrt(3))))


def test_two_seeds_use_the_cauchy_closed_form():
    runs = [result("a", 0, 60.0), result("a", 1, 62.0), result("b", 0, 65.0), result("b", 1, 64.0)]
    paired = compare(runs).paired["b"]
    d = [5.0, 2.0]
    mean, sd = 3.5, sample_std(d)
    t975 = math.tan(0.475 * math.pi)
    assert t975 == pytest.approx(12.7062, abs=1e-4)
    assert paired.ci_low == pytest.approx(mean - t975 * sd / math.sqrt(2))
    t = mean / (sd / math.sqrt(2))
    assert paired.p_value == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi)


def test_client_wins_pool_seeds_and_count_ties_apart():
    mine = [(50.0, 60.0, 70.0), (10.0, 20.0, 30.0)]
    theirs = [(40.0, 60.0, 80.0), (10.0, 25.0, 5.0)]
    expected = [0, 0, 0]
    for a_seed, b_seed in zip(mine, theirs, strict=True):
        for a, b in zip(a_seed, b_seed, strict=True):
            expected[0 if a > b else 1 if a == b else 2] += 1
    assert client_wins(mine, theirs) == tuple(expected) == (2, 2, 2)
    with pytest.raises(ValueError, match="numbers of clients"):
        client_wins([(1.0,)], [(1.0, 2.0)])


def test_wins_in_a_comparison_pair_clients_of_the_same_seed():
    runs = [
        result("a", 0, 50, clients=(10, 20)),
        result("a", 1, 50, clients=(30, 40)),
        result("b", 1, 50, clients=(35, 40)),  # order of results must not matter
        result("b", 0, 50, clients=(5, 25)),
    ]
    paired = compare(runs).paired["b"]
    assert (paired.clients_better, paired.clients_tied, paired.clients_worse) == (2, 1, 1)


def test_one_seed_leaves_std_ci_p_undefined_and_says_so(tmp_path):
    runs = [result("fedavg", 0, 70.0), result("fedbn", 0, 75.5)]
    c = compare(runs)
    assert c.methods[0].final_std is None
    paired = c.paired["fedbn"]
    assert paired.diff_mean == pytest.approx(5.5)
    assert paired.ci_low is None and paired.ci_high is None and paired.p_value is None
    assert any("One seed" in note for note in c.notes)
    files = write_files(tmp_path, runs, c)
    for path in files:
        assert "nan" not in path.read_text().lower(), path.name
    md = (tmp_path / "summary.md").read_text()
    assert "| fedbn | 75.50 | +5.50 | — |" in md and "One seed" in md
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["methods"][1]["p_value"] is None and data["methods"][1]["final_std"] is None
    row = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text())))[1]
    assert row["final_std"] == "" and row["ci_low"] == "" and row["diff_mean"] == "5.5"


def test_identical_differences_make_p_undefined_not_nan():
    runs = [result("a", s, 60.0 + s) for s in range(3)] + [
        result("b", s, 62.0 + s) for s in range(3)
    ]
    c = compare(runs)
    paired = c.paired["b"]
    assert paired.diff_mean == pytest.approx(2.0) and paired.p_value is None
    assert paired.ci_low == pytest.approx(2.0) and paired.ci_high == pytest.approx(2.0)
    assert any("same for every seed" in note for note in c.notes)


def test_differing_partitions_or_weights_are_flagged():
    runs = [result("a", 0, 1.0), result("b", 0, 2.0, part="other")]
    c = compare(runs)
    assert c.identical_partitions is False and c.identical_initial_weights is True
    assert any("WARNING: the partitions differ" in note for note in c.notes)
    unknown = [result("a", 0, 1.0), result("b", 0, 2.0, init=None)]
    assert compare(unknown).identical_initial_weights is None


def test_mismatched_seeds_are_refused():
    with pytest.raises(ValueError, match="seeds differ"):
        compare([result("a", 0, 1.0), result("a", 1, 1.0), result("b", 0, 1.0)])


def test_files_and_table(three_seeds, tmp_path):
    c = compare(three_seeds, ["fedavg", "fedbn", "lips"])
    rows = list(csv.DictReader(io.StringIO(results_csv(three_seeds))))
    assert [(r["method"], int(r["seed"])) for r in rows] == [
        (m, s) for m in ("fedavg", "fedbn", "lips") for s in range(3)
    ]
    assert float(rows[4]["final_accuracy"]) == FEDBN[1]
    assert rows[0]["run_dir"] == "out/fedavg/seed0" and rows[0]["partition_sha256"] == "p0"
    summary = list(csv.DictReader(io.StringIO(summary_csv(c))))
    assert [r["method"] for r in summary] == ["fedavg", "fedbn", "lips"]
    assert float(summary[2]["final_mean"]) == pytest.approx(sum(LIPS) / 3)
    assert summary[0]["p_value"] == "" and summary[0]["seeds"] == "0 1 2"
    md = summary_markdown(c).splitlines()
    assert md[0] == ("| method | acc (mean ± std) | Δ vs fedavg [95% CI] | p | wins | uplink bpp |")
    d = [a - b for a, b in zip(FEDBN, FEDAVG, strict=True)]
    assert md[3].startswith(f"| fedbn | {sum(FEDBN) / 3:.2f} ± {sample_std(FEDBN):.2f} | ")
    assert md[3].endswith(" | 0/6 (6) | — |")  # all ties; summaries without uplink_bpp
    write_files(tmp_path, three_seeds, c, {"preset": "x.yaml"})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["preset"] == "x.yaml" and data["std_ddof"] == 1
    assert data["methods"][1]["diff_mean"] == pytest.approx(sum(d) / 3)
    assert not list(tmp_path.glob(".*.tmp"))
    console = Console(width=160, record=True)
    console.print(comparison_table(c, "title"))
    text = console.export_text()
    assert "lips" in text and f"{sum(LIPS) / 3:.2f} ± {sample_std(LIPS):.2f}" in text
    assert "baseline" in text and "ddof=1" in text


def test_uplink_bpp_and_global_accuracy_come_from_the_run_summaries(tmp_path):
    """Means over seeds of each run's ``uplink_bpp`` and final ``acc_global``, in every output."""
    bpp = {"fedavg": [32.3, 32.3], "ssfl": [16.5, 16.4]}
    glob = {"fedavg": [80.0, 83.0], "ssfl": [81.0, 86.0]}
    runs = [
        result(m, s, 70.0 + s, uplink_bpp=bpp[m][s], acc_global=glob[m][s])
        for m in ("fedavg", "ssfl")
        for s in (0, 1)
    ]
    c = compare(runs)
    ssfl = c.methods[1]
    assert ssfl.uplink_bpp_mean == pytest.approx(16.45)
    assert ssfl.global_mean == pytest.approx(83.5)
    assert ssfl.global_std == pytest.approx(sample_std(glob["ssfl"]))
    md = summary_markdown(c).splitlines()
    assert md[0].endswith("| wins | global acc | uplink bpp |")
    assert md[3].endswith(f"| {83.5:.2f} ± {sample_std(glob['ssfl']):.2f} | 16.45 |")
    rows = list(csv.DictReader(io.StringIO(results_csv(runs))))
    assert [float(r["uplink_bpp"]) for r in rows] == bpp["fedavg"] + bpp["ssfl"]
    assert [float(r["global_accuracy"]) for r in rows] == glob["fedavg"] + glob["ssfl"]
    write_files(tmp_path, runs, c)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["methods"][0]["uplink_bpp_mean"] == pytest.approx(32.3)
    console = Console(width=200, record=True)
    console.print(comparison_table(c))
    text = console.export_text()
    assert "uplink bpp" in text and "16.45" in text and "global % ± std" in text
    # a run without the field leaves its method's mean undefined, not averaged over the others
    partial = [*runs[:3], result("ssfl", 1, 71.0)]
    stats = compare(partial).methods[1]
    assert stats.uplink_bpp_mean is None and stats.global_mean is None


def test_global_variants_get_a_column_each_and_a_dash_where_a_method_has_none(tmp_path):
    """FedPM's acc_global_threshold: mean ± std over seeds; FedAvg has no such variant."""
    runs = [result("fedavg", s, 70.0, acc_global=60.0 + s) for s in (0, 1)]
    runs += [
        result("fedpm", s, 71.0, acc_global=50.0, variants={"threshold": t})
        for s, t in ((0, 80.0), (1, 90.0))
    ]
    c = compare(runs)
    assert c.methods[1].variants == {"threshold": (85.0, pytest.approx(sample_std([80, 90])))}
    assert c.methods[0].variants == {}
    md = summary_markdown(c).splitlines()
    assert md[0].endswith("| global acc | global threshold acc | uplink bpp |")
    assert md[2].endswith(f"| 60.50 ± 0.71 | {DASH} | {DASH} |")
    assert md[3].endswith(f"| 50.00 ± 0.00 | 85.00 ± {sample_std([80, 90]):.2f} | {DASH} |")
    write_files(tmp_path, runs, c)
    rows = json.loads((tmp_path / "summary.json").read_text())["methods"]
    assert rows[1]["global_threshold_mean"] == 85.0 and rows[0]["global_threshold_mean"] is None
    console = Console(width=200, record=True)
    console.print(comparison_table(c))
    assert "global threshold %" in console.export_text()


def test_a_diverged_seed_is_named_and_left_out_of_means_and_pairs():
    """Method b diverges with seed 2: its mean and std are over seeds 0, 1; the pairing with a
    uses seeds 0, 1 only (two seeds: the Cauchy closed form); the table says which seed."""
    runs = [result("a", s, f) for s, f in enumerate((60.0, 62.0, 61.0))]
    runs += [result("b", 0, 65.0), result("b", 1, 64.0)]
    broken = {"method": "b", "seed": 2, "final_accuracy": None, "best_accuracy": None}
    broken.update(final_metric="acc_agg", wall_seconds=3.0, final_acc_clients=[])
    runs.append(RunResult.from_summary({**broken, "status": "diverged"}, "out/b/seed2"))
    c = compare(runs)
    a, b = c.methods
    assert a.final_mean == pytest.approx(61.0) and a.diverged == ()
    assert b.final_mean == pytest.approx(64.5) and b.final_std == pytest.approx(
        sample_std([65, 64])
    )
    assert b.diverged == (2,) and b.seeds == (0, 1, 2)
    assert b.wall_mean == pytest.approx((10.0 + 10.0 + 3.0) / 3, abs=1e-3)  # time spent
    paired = c.paired["b"]
    assert paired.n == 2 and paired.diff_mean == pytest.approx(((65 - 60) + (64 - 62)) / 2)
    assert paired.ci_low == pytest.approx(
        3.5 - math.tan(0.475 * math.pi) * sample_std([5, 2]) / 2**0.5
    )
    assert any("b: DIVERGED with seed 2" in note for note in c.notes)
    text = io.StringIO()
    Console(file=text, width=200).print(comparison_table(c))
    assert "64.50 ± 0.71 (1 diverged)" in text.getvalue()


def test_bpp_keeps_four_significant_digits():
    """FedPM's 0.99984 bits per parameter must not print as 1.00 beside FedAvg's 32."""
    from fedlab_cli.report.compare import format_bpp

    assert [format_bpp(v) for v in (0.99984, 16.4512, 32.0, None)] == [
        "0.9998",
        "16.45",
        "32",
        DASH,
    ]
