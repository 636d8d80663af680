"""inertia.csv: every value recomputed here from saved checkpoints and hand-made gradients."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlab_cli.engine import checkpoint
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError

LAYERS = {  # small_cnn's conv/linear weights in network order, with their roles
    "features.0.weight": "first",
    "features.3.weight": "middle",
    "features.7.weight": "middle",
    "classifier.weight": "last",
}


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def cell(row, key):
    return float(row[key]) if row[key] else math.nan


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def shared(state, name):
    """The shared model's tensor: the mean over all clients, flattened, in float64."""
    return state["population"]["params"][name].mean(0).flatten().double().numpy()


@pytest.mark.parametrize("method", ["fedavg", "separate"])
def test_csv_equals_values_recomputed_from_checkpoints(make_spec, tmp_path, method):
    spec = make_spec(
        method={"name": method},
        federation={"rounds": 4},
        training={"local_epochs": 1},
        inertia={"ref_rounds": [2, 1]},
        output={"checkpoint_every": 1, "keep_checkpoints": 0},
    )
    session = RunSession.start(spec, tmp_path / "run")
    pop = session.federation.population
    initial = {n: pop.params[n].mean(0).flatten().double().numpy() for n in LAYERS}
    run(session.federation, on_round=[session.on_round])
    manifests = [
        torch.load(session.run_dir.checkpoint_path(t), weights_only=True) for t in range(4)
    ]
    states = [checkpoint.load(session.run_dir, m, 0, pop.total_clients) for m in manifests]
    rows = read_csv(tmp_path / "run" / "inertia.csv")
    assert list(rows[0]) == [
        "round", "layer", "role", "ref_round", "cos_ref", "cos_prev", "rel_update", "grad_norm",
    ]  # fmt: skip
    # one row per round, layer (network order) and reference round (ascending)
    expected_keys = [(t, n, r) for t in range(4) for n in LAYERS for r in (1, 2)]
    assert [(int(r["round"]), r["layer"], int(r["ref_round"])) for r in rows] == expected_keys
    assert all(r["role"] == LAYERS[r["layer"]] for r in rows)

    checked = 0
    for row in rows:
        t, name, ref = int(row["round"]), row["layer"], int(row["ref_round"])
        w = shared(states[t], name)
        prev = shared(states[t - 1], name) if t > 0 else initial[name]  # round -1: initial model
        assert cell(row, "cos_prev") == pytest.approx(cosine(w, prev), rel=1e-9, abs=1e-9)
        rel = np.linalg.norm(w - prev) / np.linalg.norm(prev)
        assert cell(row, "rel_update") == pytest.approx(rel, rel=1e-8)
        if t < ref:
            assert row["cos_ref"] == ""  # undefined before the reference round
        else:
            expected = cosine(w, shared(states[ref], name))
            assert cell(row, "cos_ref") == pytest.approx(expected, rel=1e-9, abs=1e-9)
            checked += 1
        assert rel > 0  # the model moved, so the comparison above is not trivially 0 == 0
    assert checked == 4 * (3 + 2)  # rounds 1..3 against ref 1, rounds 2..3 against ref 2
    cos_late = [cell(r, "cos_ref") for r in rows if r["round"] == "3" and r["ref_round"] == "1"]
    assert all(c < 1 - 1e-7 for c in cos_late)  # a real cosine, not the reference itself


def test_grad_norm_is_the_mean_over_participants_of_last_batch_norms(make_spec, tmp_path):
    # one full-batch step per round: the last mini-batch gradient of round 0 is the gradient
    # at the initial model on the client's whole training set (batch order does not matter)
    spec = make_spec(
        data={"num_clients": 4, "train_per_client": 20},
        training={"local_epochs": 1, "batch_size": 20, "momentum": 0.0},
        federation={"rounds": 1, "participation": 0.5},
    )
    session = RunSession.start(spec, tmp_path / "run")
    fed = session.federation
    start = {n: t[0].clone() for n, t in fed.population.params.items()}
    buffers = {n: t[0].clone() for n, t in fed.population.buffers.items()}
    participants = fed.participants(0)
    assert len(participants) == 2
    run(fed, on_round=[session.on_round])

    norms = {n: [] for n in LAYERS}
    fed.model.train()
    for c in participants:
        own = fed.data.train_idx[c]
        images = fed.data.dataset.train_images[own].float() / 255
        labels = fed.data.dataset.train_labels[own]
        params = {n: p.clone().requires_grad_(True) for n, p in start.items()}
        bufs = {n: b.clone() for n, b in buffers.items()}
        loss = F.cross_entropy(fed.strategy.one_model(params, bufs, images, train=True), labels)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
        for n in LAYERS:
            norms[n].append(float(grads[n].norm()))
    rows = read_csv(tmp_path / "run" / "inertia.csv")
    assert [r["layer"] for r in rows] == list(LAYERS)
    for row in rows:
        per_client = norms[row["layer"]]
        assert per_client[0] != pytest.approx(per_client[1], rel=1e-3)  # the mean is informative
        assert cell(row, "grad_norm") == pytest.approx(np.mean(per_client), rel=1e-4)


class Crash(Exception):
    pass


def test_resume_records_what_an_uninterrupted_run_records(make_spec, tmp_path):
    spec = make_spec(
        method={"name": "fedbn"},
        federation={"rounds": 5},
        training={"local_epochs": 1},
        inertia={"ref_rounds": [1, 3]},
        output={"checkpoint_every": 2, "keep_checkpoints": 0},
    )
    full = RunSession.start(spec, tmp_path / "full")
    run(full.federation, on_round=[full.on_round])

    broken = RunSession.start(spec, tmp_path / "broken")

    def crash_after_round_2(record):
        if record.round == 2:
            raise Crash

    with pytest.raises(Crash):  # its last checkpoint is round 1, which holds reference round 1
        run(broken.federation, on_round=[broken.on_round, crash_after_round_2])
    assert {r["round"] for r in read_csv(tmp_path / "broken" / "inertia.csv")} == {"0", "1", "2"}
    resumed = RunSession.resume(tmp_path / "broken")
    assert {r["round"] for r in read_csv(tmp_path / "broken" / "inertia.csv")} == {"0", "1"}
    run(resumed.federation, on_round=[resumed.on_round])

    full_rows = read_csv(tmp_path / "full" / "inertia.csv")
    assert read_csv(tmp_path / "broken" / "inertia.csv") == full_rows
    assert len(full_rows) == 5 * 4 * 2


def test_a_line_cut_short_by_a_crash_is_dropped_on_resume(make_spec, tmp_path):
    spec = make_spec(federation={"rounds": 2}, output={"checkpoint_every": 1})
    session = RunSession.start(spec, tmp_path / "run")
    run(session.federation, on_round=[session.on_round])
    path = tmp_path / "run" / "inertia.csv"
    text = path.read_text()
    path.write_text(text + "2,features.0.weight,fir")  # a crash mid-write of a later round
    rows = session.run_dir.inertia_rows()
    assert [r["round"] for r in rows] == ["0"] * 4 + ["1"] * 4


@pytest.mark.parametrize(
    "refs, message",
    [([-1], "inertia.ref_rounds: rounds are 0-based and must be >= 0 (got -1)"),
     ([], "inertia.ref_rounds: give at least one reference round")],
)  # fmt: skip
def test_bad_reference_rounds_are_rejected_before_the_run_dir_exists(
    make_spec, tmp_path, refs, message
):
    spec = make_spec(inertia={"ref_rounds": refs})
    with pytest.raises(FedlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunSession.start(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_started_without_the_recorder_resumes_without_it(make_spec, tmp_path):
    spec = make_spec(
        federation={"rounds": 2}, training={"local_epochs": 1}, output={"checkpoint_every": 1}
    )
    old = RunSession.start(spec, tmp_path / "run")
    old.federation.observers.clear()  # as a run from before inertia recording
    old.inertia = None

    def crash_after_round_0(record):
        if record.round == 0:
            raise Crash

    with pytest.raises(Crash):
        run(old.federation, on_round=[old.on_round, crash_after_round_0])
    resumed = RunSession.resume(tmp_path / "run")
    assert resumed.inertia is None and resumed.federation.next_round == 1
    run(resumed.federation, on_round=[resumed.on_round])
    assert len(resumed.run_dir.metrics()) == 2
    assert not (tmp_path / "run" / "inertia.csv").exists()
