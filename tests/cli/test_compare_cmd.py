"""``fedlab compare`` from the outside: its numbers against an independent computation from the
run dirs, rerun reuse, interruption, one-line errors."""

import csv
import json
import math

import pytest
from typer.testing import CliRunner

import fedlab_cli.engine.compare as engine_compare
from fedlab_cli.cli import app

SPEC = """
data: {dataset: digits, num_clients: 3, alpha: 0.5, train_per_client: 16, test_per_client: 10}
model: {name: small_cnn}
federation: {rounds: 2}
training: {local_epochs: 1, batch_size: 16, lr: 0.05}
method: {name: fedbn}
output: {checkpoint_every: 1}
"""
LEARNING = {  # enough local steps that the methods end apart, seed by seed
    "data.num_clients": 4,
    "data.train_per_client": 24,
    "data.test_per_client": 15,
    "training.local_epochs": 3,
    "training.batch_size": 8,
    "training.lr": 0.1,
}


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def invoke(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)], env={"COLUMNS": "200"})


def sample_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t975_df2():
    """The 0.975 quantile of t with 2 degrees of freedom, from F(t) = 1/2 + t/(2 sqrt(2+t²))."""
    return math.sqrt(2 * 0.95**2 / (1 - 0.95**2))


def test_compare_numbers_equal_an_independent_computation_from_the_run_dirs(spec_file, tmp_path):
    out = tmp_path / "cmp"
    sets = [arg for key, value in LEARNING.items() for arg in ("--set", f"{key}={value}")]
    args = ("fedavg", "fedbn", "--preset", spec_file, "--seeds", "0,1,2", "--out", out, *sets)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    for text in (
        "fedavg",
        "fedbn",
        "Δ vs fedavg [95% CI]",
        "ddof=1",
        "final % ± std",
        "uplink bpp",
    ):
        assert text in result.stdout, text
    summary = json.loads((out / "summary.json").read_text())
    runs = {
        (m, s): json.loads((out / m / f"seed{s}" / "summary.json").read_text())
        for m in ("fedavg", "fedbn")
        for s in range(3)
    }
    finals = {m: [runs[m, s]["final_accuracy"] for s in range(3)] for m in ("fedavg", "fedbn")}
    for row, method in zip(summary["methods"], ("fedavg", "fedbn"), strict=True):
        assert row["method"] == method
        assert row["final_mean"] == pytest.approx(sum(finals[method]) / 3)
        assert row["final_std"] == pytest.approx(sample_std(finals[method]))
        best = [runs[method, s]["best_accuracy"] for s in range(3)]
        assert row["best_mean"] == pytest.approx(sum(best) / 3)
        bpp = [runs[method, s]["uplink_bpp"] for s in range(3)]
        assert row["uplink_bpp_mean"] == pytest.approx(sum(bpp) / 3)
    assert summary["methods"][1]["uplink_bpp_mean"] < summary["methods"][0]["uplink_bpp_mean"]
    d = [b - a for a, b in zip(finals["fedavg"], finals["fedbn"], strict=True)]
    mean, sd = sum(d) / 3, sample_std(d)
    half = t975_df2() * sd / math.sqrt(3)
    t = mean / (sd / math.sqrt(3))
    fedbn = summary["methods"][1]
    assert fedbn["diff_mean"] == pytest.approx(mean)
    assert (fedbn["ci_low"], fedbn["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert fedbn["p_value"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    pairs = [
        (b, a)
        for s in range(3)
        for a, b in zip(
            runs["fedavg", s]["final_acc_clients"],
            runs["fedbn", s]["final_acc_clients"],
            strict=True,
        )
    ]
    assert fedbn["clients_better"] == sum(b > a for b, a in pairs)
    assert fedbn["clients_tied"] == sum(b == a for b, a in pairs)
    assert fedbn["clients_total"] == 12
    assert summary["identical_partitions"] is True
    assert summary["identical_initial_weights"] is True

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["seed"]) for r in rows] == [
        (m, str(s)) for m in ("fedavg", "fedbn") for s in range(3)
    ]
    assert [float(r["final_accuracy"]) for r in rows] == finals["fedavg"] + finals["fedbn"]
    md = (out / "summary.md").read_text().splitlines()
    assert md[3].startswith(
        f"| fedbn | {sum(finals['fedbn']) / 3:.2f} ± {sample_std(finals['fedbn']):.2f} | "
        f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] |"
    )
    assert (out / "summary.csv").read_text().startswith("method,final_metric,seeds,")

    # the same command again trains nothing and prints the same table
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("seed*/summary.json")}
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("reused") == 6
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert json.loads((out / "summary.json").read_text()) == summary


def test_interrupt_then_rerun_resumes_and_keeps_finished_runs(spec_file, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    real_run = engine_compare.run
    calls = []

    def crash_on_round_1(federation, on_round=()):
        calls.append(federation.spec.method.name)

        def stop(record):  # Ctrl-C in the 2nd run, after its round 0 was checkpointed
            if len(calls) == 2 and record.round == 0:
                raise KeyboardInterrupt

        real_run(federation, [*on_round, stop])

    monkeypatch.setattr(engine_compare, "run", crash_on_round_1)
    args = ("fedavg", "fedbn", "--preset", spec_file, "--seeds", "0,1", "--out", out)
    result = invoke(*args)
    assert result.exit_code == 130
    assert "interrupted during fedavg seed 1" in result.stderr
    assert "rerun the same command" in result.stderr
    finished = out / "fedavg" / "seed0" / "summary.json"
    stamp = finished.stat().st_mtime_ns
    assert not (out / "fedavg" / "seed1" / "summary.json").exists()

    monkeypatch.setattr(engine_compare, "run", real_run)
    again = invoke(*args, "--json")
    assert again.exit_code == 0, again.output
    assert "fedavg seed 0: " in again.stderr and "reused" in again.stderr
    assert "fedavg seed 1: resuming at round 1" in again.stderr
    assert finished.stat().st_mtime_ns == stamp
    summary = json.loads(again.stdout)
    assert [m["method"] for m in summary["methods"]] == ["fedavg", "fedbn"]
    assert all(
        (out / m / f"seed{s}" / "summary.json").is_file()
        for m in ("fedavg", "fedbn")
        for s in (0, 1)
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["fedavg", "nope"], "method.name: unknown method 'nope'"),
        (["fedavg", "fedbn", "--seeds", "a,b"], "--seeds: expected comma-separated integers"),
        (["fedavg", "fedbn", "--seeds", "0,0"], "--seeds: expected distinct"),
        (["fedavg", "fedbn", "--set", "method.nope=1"], "no compared method takes this key"),
        (["fedavg", "fedbn", "--set", "seed=1"], "sets it from --seeds"),
        (["fedavg", "fedbn", "--clients", "0"], "data.num_clients: Input should be greater"),
        (["fedavg", "fedbn", "--preset", "nope.yaml"], "spec: no such file 'nope.yaml'"),
        (["fedavg", "--seeds", "4294967296"], "--seeds: seeds are integers from 0 to 4294967295"),
        (["fedavg", "--seeds", "-1"], "--seeds: seeds are integers from 0 to 4294967295"),
        (["fedavg", "--seeds", "9" * 5000], "--seeds: expected comma-separated integers"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(spec_file, tmp_path, args, message):
    out = tmp_path / "cmp"
    if "--preset" not in args:
        args = [*args, "--preset", spec_file]
    result = invoke(*args, "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_rerun_with_another_protocol_is_refused(spec_file, tmp_path):
    out = tmp_path / "cmp"
    assert invoke("fedavg", "--preset", spec_file, "--seeds", "0", "--out", out).exit_code == 0
    result = invoke("fedavg", "--preset", spec_file, "--seeds", "0", "--out", out, "--rounds", 3)
    assert result.exit_code == 2
    assert "was run with federation.rounds=2, this command asks for 3" in result.stderr
    assert "One seed" in (out / "summary.md").read_text()


def test_default_out_is_stable_and_names_the_flags(spec_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("fedbn", "--preset", spec_file, "--seeds", "1", "--rounds", 1, "--quiet")
    assert result.exit_code == 0, result.output
    target = tmp_path / "runs" / "compare-tiny-fedbn-rounds1"
    assert (target / "fedbn" / "seed1" / "summary.json").is_file()
    assert result.stdout == ""


def test_out_that_is_a_file_is_refused_before_work(spec_file, tmp_path):
    out = tmp_path / "cmp"
    out.write_text("results of something else")
    result = invoke("fedavg", "--preset", spec_file, "--seeds", "0", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --out: exists and is a file, not a directory (got '{out}')"
    )
    assert out.read_text() == "results of something else"


def test_a_compare_dir_in_use_is_refused_and_left_alone(spec_file, tmp_path):
    from fedlab_cli.engine.lock import RunLock

    out = tmp_path / "cmp"
    with RunLock(out / "fedavg" / "seed0"):  # e.g. `fedlab run --resume` of one of its runs
        result = invoke("fedavg", "--preset", spec_file, "--seeds", "0", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: --out: '{out / 'fedavg' / 'seed0'}' is in use")
    assert not out.exists()  # the locks it took are gone, and the folders they needed


def test_sigterm_stops_after_the_round_and_a_rerun_continues(spec_file, tmp_path, monkeypatch):
    import os
    import signal

    real_run = engine_compare.run

    def term_after_round_0(federation, on_round=()):
        def send(record):
            if record.round == 0:
                os.kill(os.getpid(), signal.SIGTERM)

        real_run(federation, [on_round[0], send, *on_round[1:]])

    out = tmp_path / "cmp"
    args = ("fedavg", "--preset", spec_file, "--seeds", "0", "--out", out)
    monkeypatch.setattr(engine_compare, "run", term_after_round_0)
    result = invoke(*args)
    assert result.exit_code == 143
    assert result.stderr.strip().splitlines()[-1] == (
        f"stopped fedavg seed 0 after round 0 (checkpoint saved); finished runs are kept in "
        f"{out} — rerun the same command to continue"
    )
    assert (out / "fedavg" / "seed0" / "checkpoints" / "round_0000.pt").is_file()
    monkeypatch.setattr(engine_compare, "run", real_run)
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "fedavg seed 0: resuming at round 1" in again.stderr


@pytest.mark.parametrize("launch", [[], ["--jobs", "2"]], ids=["one-by-one", "jobs-2"])
def test_a_diverged_run_is_reported_in_the_table_not_fatal(spec_file, tmp_path, launch):
    """FedProx with μ = 1e38 overflows its proximal term: every seed diverges. The compare still
    ends with exit 0, the table and summary.json name the diverged runs, the baseline's numbers
    are those of its own run dirs, and a rerun reuses the diverged runs instead of retrying."""
    out = tmp_path / "cmp"
    sets = [arg for key, value in LEARNING.items() for arg in ("--set", f"{key}={value}")]
    args = ("fedavg", "fedprox", "--preset", spec_file, "--seeds", "0,1", "--out", out, *sets)
    args = (*args, *launch)
    result = invoke(*args, "--set", "fedprox:method.mu=1e38")
    assert result.exit_code == 0, result.output
    assert "diverged" in result.output and "DIVERGED with seed 0, 1" in result.output
    for seed in (0, 1):
        summary = json.loads((out / "fedprox" / f"seed{seed}" / "summary.json").read_text())
        assert summary["status"] == "diverged" and "loss nan on client" in summary["diverged"]
    table = json.loads((out / "summary.json").read_text())
    rows = {row["method"]: row for row in table["methods"]}
    assert rows["fedprox"]["final_mean"] is None and rows["fedprox"]["diverged"] == [0, 1]
    assert rows["fedprox"]["diff_mean"] is None  # no seed where both completed
    finals = [
        json.loads((out / "fedavg" / f"seed{s}" / "summary.json").read_text())["final_accuracy"]
        for s in (0, 1)
    ]
    assert rows["fedavg"]["final_mean"] == pytest.approx(sum(finals) / 2)
    assert rows["fedavg"]["diverged"] == []
    again = invoke(*args, "--set", "fedprox:method.mu=1e38")
    assert again.exit_code == 0 and again.output.count("reused") == 4


@pytest.mark.parametrize(
    "data, label",
    [
        ({"partition": "dirichlet", "alpha": 0.3}, "Dir 0.3"),
        ({"partition": "iid"}, "iid"),
        ({"partition": "pathological", "classes_per_client": 2}, "2 classes each"),
    ],
)
def test_the_table_title_names_the_split_only_with_its_own_parameter(data, label):
    from fedlab_cli.cli.compare_cmd import split_label
    from fedlab_cli.spec.model import DataSpec

    assert split_label(DataSpec(dataset="digits", **data)) == label
