"""Planning and running a comparison: spec routing, identical starts, reuse and resume."""

import json

import pytest
import torch
import yaml

from fedlab_cli.cli.presets import find_spec
from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.data.registry import load_dataset
from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.compare import (
    FINGERPRINTS,
    CompareEvents,
    execute,
    plan_compare,
    run_path,
)
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.population import weights_sha256
from fedlab_cli.engine.rundir import RunDir
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import load_spec

PRESET = {
    "data": {
        "dataset": "digits",
        "num_clients": 3,
        "alpha": 0.5,
        "train_per_client": 16,
        "test_per_client": 10,
    },
    "model": {"name": "small_cnn"},
    "federation": {"rounds": 2},
    "training": {"local_epochs": 1, "batch_size": 16, "lr": 0.05},
    "method": {"name": "fedbn", "share_bias": True},
    "output": {"checkpoint_every": 1, "keep_checkpoints": 0},
}


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(PRESET))
    return path


def plan(preset, out, methods=("fedavg", "fedbn"), seeds=(0, 1), shortcuts=None, overrides=()):
    return plan_compare(preset, list(methods), list(seeds), out, shortcuts, list(overrides))


def method_section(planned, method):
    return next(p.resolved.to_dict()["method"] for p in planned if p.method == method)


def test_preset_method_params_stay_with_their_method(preset, tmp_path):
    planned = plan(preset, tmp_path / "cmp")
    assert [(p.method, p.seed, p.status) for p in planned] == [
        ("fedavg", 0, "start"),
        ("fedavg", 1, "start"),
        ("fedbn", 0, "start"),
        ("fedbn", 1, "start"),
    ]
    assert method_section(planned, "fedavg") == {"name": "fedavg"}
    assert method_section(planned, "fedbn")["share_bias"] is True
    assert planned[3].resolved.spec.seed == 1
    assert planned[3].resolved.spec.output.dir == run_path(tmp_path / "cmp", "fedbn", 1)
    assert not (tmp_path / "cmp").exists()  # planning writes nothing


def test_method_overrides_go_only_to_methods_that_take_them(preset, tmp_path):
    planned = plan(preset, tmp_path / "c", overrides=["method.share_bias=false"])
    assert method_section(planned, "fedavg") == {"name": "fedavg"}
    assert method_section(planned, "fedbn")["share_bias"] is False
    planned = plan(preset, tmp_path / "c", overrides=["fedbn:method.share_bias=false"])
    assert method_section(planned, "fedavg") == {"name": "fedavg"}
    assert method_section(planned, "fedbn")["share_bias"] is False


def test_a_method_can_have_its_own_local_optimizer(preset, tmp_path):
    """``M:training.*`` changes that method's local training only; data and seeds stay shared."""
    overrides = ["fedbn:training.optimizer=adam", "fedbn:training.lr=0.003", "training.lr=0.2"]
    planned = plan(preset, tmp_path / "c", overrides=overrides)
    training = {p.method: p.resolved.spec.training for p in planned}
    assert (training["fedavg"].optimizer, training["fedavg"].lr) == ("sgd", 0.2)
    assert (training["fedbn"].optimizer, training["fedbn"].lr) == ("adam", 0.003)
    data = {p.method: p.resolved.spec.data for p in planned}
    assert data["fedavg"] == data["fedbn"]


@pytest.mark.parametrize(
    "overrides, methods, message",
    [
        (["method.nope=1"], ("fedavg", "fedbn"), "--set method.nope: no compared method takes"),
        (["method.share_bias=1"], ("fedavg", "separate"), "fedavg: none; separate: none"),
        (["fedavg:method.share_bias=true"], ("fedavg", "fedbn"), "fedavg: method.share_bias:"),
        (["lips2:method.s0=0.5"], ("fedavg", "fedbn"), "'lips2' is not one of the compared"),
        (["fedbn:data.alpha=0.5"], ("fedavg", "fedbn"), "only method.* and training.* keys"),
        (["seed=3"], ("fedavg", "fedbn"), "--set seed: a comparison sets it from --seeds"),
        (["output.dir=x"], ("fedavg", "fedbn"), "from --out"),
        (["method.name=fedbn"], ("fedavg",), "from the METHOD arguments"),
        (["method.share_bias=maybe"], ("fedavg", "fedbn"), "fedbn: method.share_bias: Input"),
        (["training.lr=-1"], ("fedavg", "fedbn"), "training.lr: Input should be greater"),
        ([], ("fedavg", "nope"), "method.name: unknown method 'nope'"),
        ([], ("fedavg", "fedavg"), "method 'fedavg' is given twice"),
    ],
)
def test_bad_comparisons_are_one_line_errors(preset, tmp_path, overrides, methods, message):
    with pytest.raises(FedlabError) as err:
        plan(preset, tmp_path / "c", methods=methods, overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "c").exists()


def test_shortcuts_on_the_default_preset_give_table_3(preset, tmp_path):
    """``--clients 300`` on the default preset is the paper's Table 3, CIFAR-10 N=300."""
    planned = plan(
        find_spec("cifar10_fedbn"),
        tmp_path / "c",
        methods=("fedbn",),
        seeds=(0,),
        shortcuts={"clients": 300, "alpha": None, "rounds": None, "samples": None},
    )
    spec = planned[0].resolved.spec
    assert (spec.data.dataset, spec.model.name, spec.data.alpha) == ("cifar10", "vgg6", 0.5)
    assert (spec.data.num_clients, spec.data.train_per_client) == (300, 100)
    assert (spec.data.test_per_client, spec.federation.rounds) == (400, 300)
    shortcuts = {"clients": 5, "alpha": 0.01, "rounds": 7, "samples": 9}
    spec = plan(find_spec("quickstart"), tmp_path / "d", ("fedbn",), (0,), shortcuts)[0]
    data = spec.resolved.spec.data
    assert (data.num_clients, data.alpha, data.train_per_client) == (5, 0.01, 9)
    assert spec.resolved.spec.federation.rounds == 7
    # --set is applied after the shortcut flags
    spec = plan(preset, tmp_path / "e", ("fedbn",), (0,), {"rounds": 7}, ["federation.rounds=4"])[0]
    assert spec.resolved.spec.federation.rounds == 4


def rebuilt_population(run_dir):
    """The initial population a run dir's stored spec and partition give, built from scratch."""
    resolved = load_spec(run_dir / "spec.yaml")
    spec = resolved.spec
    dataset = load_dataset(spec.data.dataset, spec.data.root, spec.data.download)
    splits = ClientSplits.from_json(json.loads((run_dir / "partition.json").read_text()))
    return build_federation(resolved, dataset=dataset, splits=splits).population


def test_same_seed_same_partition_and_initial_weights(preset, tmp_path):
    out = tmp_path / "cmp"
    methods = ("fedavg", "fedbn", "separate")
    completed = execute(plan(preset, out, methods=methods), out)
    fingerprints = json.loads((out / FINGERPRINTS).read_text())
    for seed in (0, 1):
        dirs = [run_path(out, m, seed) for m in methods]
        partitions = [(d / "partition.json").read_text() for d in dirs]
        assert partitions[0] == partitions[1] == partitions[2]
        populations = [rebuilt_population(d) for d in dirs]
        for name, tensor in populations[0].params.items():
            assert torch.equal(tensor, populations[1].params[name]), name
            assert torch.equal(tensor, populations[2].params[name]), name
        recorded = {fingerprints[f"{m}/seed{seed}"] for m in methods}
        assert recorded == {weights_sha256(populations[0])}
    # ... and the seeds really differ, so the check above can fail
    assert (run_path(out, "fedavg", 0) / "partition.json").read_text() != (
        run_path(out, "fedavg", 1) / "partition.json"
    ).read_text()
    assert fingerprints["fedavg/seed0"] != fingerprints["fedavg/seed1"]
    assert {c.init_sha256 for c in completed if c.seed == 0} == {fingerprints["fedbn/seed0"]}
    assert len({c.partition_sha256 for c in completed if c.seed == 1}) == 1
    # the methods did train differently from the same start
    finals = {c.method: c.summary["final_acc_clients"] for c in completed if c.seed == 0}
    assert finals["fedavg"] != finals["separate"]


def test_a_calibrating_method_is_fingerprinted_before_its_calibration(preset, tmp_path):
    """SSFL multiplies its mask into the weights before round 0: the fingerprint is still the
    start every method shares, so the table raises no false warning."""
    out = tmp_path / "cmp"
    completed = execute(plan(preset, out, methods=("fedavg", "ssfl"), seeds=(0,)), out)
    fingerprints = json.loads((out / FINGERPRINTS).read_text())
    ssfl_dir = run_path(out, "ssfl", 0)
    resolved = load_spec(ssfl_dir / "spec.yaml")
    splits = ClientSplits.from_json(json.loads((ssfl_dir / "partition.json").read_text()))
    uncalibrated = build_federation(resolved, splits=splits, calibrate=False).population
    masked = build_federation(resolved, splits=splits).population
    assert weights_sha256(masked) != weights_sha256(uncalibrated)  # the check can fail
    assert fingerprints["ssfl/seed0"] == fingerprints["fedavg/seed0"]
    assert fingerprints["ssfl/seed0"] == weights_sha256(uncalibrated)
    assert len({c.init_sha256 for c in completed}) == 1


class Crash(Exception):
    pass


class Recorder(CompareEvents):
    """Counts what a comparison does; can crash after a given round of a given run."""

    def __init__(self, crash_in=None, crash_after_round=None):
        self.started = []
        self.done = []
        self.crash_in = crash_in
        self.crash_after_round = crash_after_round

    def run_started(self, run, session):
        self.started.append((run.key, session.federation.next_round))

    def round_done(self, run, record):
        if run.key == self.crash_in and record.round == self.crash_after_round:
            raise Crash

    def run_done(self, run, summary):
        self.done.append((run.key, run.status))


def strip_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_kill_and_rerun_finishes_without_redoing_finished_runs(preset, tmp_path):
    out = tmp_path / "cmp"
    first = Recorder(crash_in="fedavg/seed1", crash_after_round=1)
    with pytest.raises(Crash):  # killed in the 2nd run, after its round 1 was checkpointed
        execute(plan(preset, out, overrides=["federation.rounds=3"]), out, first)
    assert first.done == [("fedavg/seed0", "start")]
    done_file = run_path(out, "fedavg", 0) / "summary.json"
    before = (done_file.stat().st_mtime_ns, done_file.read_text())
    metrics_before = (run_path(out, "fedavg", 0) / "metrics.jsonl").read_text()

    again = plan(preset, out, overrides=["federation.rounds=3"])
    assert [p.status for p in again] == ["done", "resume", "start", "start"]
    second = Recorder()
    completed = execute(again, out, second)
    assert second.started == [("fedavg/seed1", 2), ("fedbn/seed0", 0), ("fedbn/seed1", 0)]
    assert [key for key, _ in second.done] == [
        "fedavg/seed0",
        "fedavg/seed1",
        "fedbn/seed0",
        "fedbn/seed1",
    ]
    assert (done_file.stat().st_mtime_ns, done_file.read_text()) == before
    assert (run_path(out, "fedavg", 0) / "metrics.jsonl").read_text() == metrics_before
    assert all((c.path / "summary.json").is_file() for c in completed)

    resumed = run_path(out, "fedavg", 1)
    rounds = [json.loads(line)["round"] for line in (resumed / "metrics.jsonl").open()]
    assert rounds == [0, 1, 2]
    # the resumed run gives the numbers of an uninterrupted one
    fresh = RunSession.start(load_spec(resumed / "spec.yaml"), tmp_path / "fresh")
    run(fresh.federation, on_round=[fresh.on_round])
    assert fresh.finish()["final_acc_clients"] == completed[1].summary["final_acc_clients"]
    assert strip_time(fresh.run_dir.metrics()) == strip_time(
        [json.loads(line) for line in (resumed / "metrics.jsonl").open()]
    )

    third = Recorder()
    execute(plan(preset, out, overrides=["federation.rounds=3"]), out, third)
    assert third.started == []  # everything is reused


def test_a_changed_spec_is_refused_not_mixed(preset, tmp_path):
    out = tmp_path / "cmp"
    execute(plan(preset, out, methods=("fedavg",), seeds=(0,)), out)
    with pytest.raises(FedlabError, match=r"federation\.rounds=2, this command asks for 5"):
        plan(preset, out, methods=("fedavg",), seeds=(0,), shortcuts={"rounds": 5})
    with pytest.raises(FedlabError, match=r"training\.lr"):
        plan(preset, out, methods=("fedavg",), seeds=(0,), overrides=["training.lr=0.01"])
    # where files go does not change the numbers: reused
    same = plan(
        preset, out, methods=("fedavg",), seeds=(0,), overrides=["output.checkpoint_every=7"]
    )
    assert [p.status for p in same] == ["done"]


def test_leftovers_of_a_killed_start_are_cleared_but_foreign_files_refused(preset, tmp_path):
    out = tmp_path / "cmp"
    target = run_path(out, "fedavg", 0)
    target.mkdir(parents=True)
    # a start killed before spec.yaml: the partition and the manifest that records it
    RunDir(target)._write_text("partition.json", "{}")
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "partition.json"]
    planned = plan(preset, out, methods=("fedavg",), seeds=(0,))
    assert planned[0].status == "start"
    execute(planned, out)
    assert (target / "summary.json").is_file()

    foreign = run_path(out, "fedbn", 0)
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FedlabError, match="exists but is not a run directory"):
        plan(preset, out, methods=("fedbn",), seeds=(0,))
