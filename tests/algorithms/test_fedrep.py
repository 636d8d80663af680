"""FedRep: the head trains first and stays local; the body trains second and is averaged."""

import dataclasses
import math

import pytest
import torch

from algorithms.fedrep import FedRep
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError


def test_aggregation_averages_the_body_and_keeps_each_head(make_spec, tmp_path):
    session = RunSession.start(make_spec(method={"name": "fedrep"}), tmp_path / "run")
    pop = session.federation.population
    torch.manual_seed(3)
    for t in pop.tensors().values():
        if t.is_floating_point():
            t.copy_(torch.rand_like(t) + 0.1)
    before = {n: t.clone() for n, t in pop.tensors().items()}
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    session.federation.method.aggregate(pop, torch.arange(4), weights, 0)
    heads = [n for n in before if pop.roles[n].is_head]
    assert heads == ["classifier.weight", "classifier.bias"]
    for name, after in pop.tensors().items():
        if pop.roles[name].is_head or not after.is_floating_point():
            assert torch.equal(after, before[name]), name  # own head; integer BN counters
            continue
        expected = sum(w * before[name][c] for c, w in enumerate(weights.tolist())) / 10
        for c in range(4):  # BN affine and BN running statistics are body: averaged too
            torch.testing.assert_close(after[c], expected, rtol=1e-5, atol=1e-6, msg=name)


class StepRecorder(FedRep):
    """Keeps a copy of the training weights and momentum buffers after every local step."""

    def setup(self, population, context):
        super().setup(population, context)
        self.snapshots = []
        self.momenta = []

    def after_step(self, block, params, optimizer_state):
        self.snapshots.append({n: p[0].detach().clone() for n, p in params.items()})
        self.momenta.append(
            {n: s["momentum_buffer"][0].clone() for n, s in optimizer_state.items()}
        )


def test_head_phase_freezes_the_body_and_body_phase_freezes_the_head(make_spec, tmp_path):
    resolved = make_spec(
        method={"name": "fedrep", "rep_epochs": 1},
        data={"num_clients": 1},
        training={"local_epochs": 3, "batch_size": 64},  # one step per epoch
        federation={"rounds": 1},
    )
    resolved = dataclasses.replace(resolved, method_cls=StepRecorder)
    session = RunSession.start(resolved, tmp_path / "run")
    pop = session.federation.population
    start = {n: t[0].clone() for n, t in pop.params.items()}
    run(session.federation)
    method = session.federation.method
    assert [p.epochs for p in method.local_phases(0, 3)] == [2, 1]
    head = {n for n in start if pop.roles[n].is_head}
    assert len(method.snapshots) == 3
    head_phase, body_phase = method.snapshots[:2], method.snapshots[2]
    for step in head_phase:
        for name, value in step.items():
            assert torch.equal(value, start[name]) != (name in head), name
    for name, value in body_phase.items():  # head as the head phase left it; body moved
        assert torch.equal(value, head_phase[-1][name]) == (name in head), name
    # neither phase carries momentum for the other's tensors: the body's buffers stay empty
    # through the head phase, and the body phase leaves the head's where the head phase did
    for name in set(start) - head:
        assert not method.momenta[1][name].any(), name
        assert method.momenta[2][name].any(), name
    for name in head:
        assert method.momenta[1][name].any(), name
        assert torch.equal(method.momenta[2][name], method.momenta[1][name]), name


def test_rep_epochs_beyond_local_epochs_is_rejected(make_spec, tmp_path):
    spec = make_spec(method={"name": "fedrep", "rep_epochs": 3}, training={"local_epochs": 2})
    with pytest.raises(FedlabError, match=r"^method\.rep_epochs: must be at most"):
        RunSession.start(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(FedlabError, match=r"^method\.rep_epochs: "):
        make_spec(method={"name": "fedrep", "rep_epochs": -1})


def test_runs_end_to_end_with_local_heads(make_spec, tmp_path):
    session = RunSession.start(make_spec(method={"name": "fedrep"}), tmp_path / "run")
    run(session.federation, on_round=[session.on_round])
    summary = session.finish()
    assert summary["final_metric"] == "acc_agg"
    for record in session.records:
        assert math.isfinite(record["acc_local"]) and math.isfinite(record["acc_agg"])
    pop = session.federation.population
    for name, t in pop.tensors().items():
        same = all(torch.equal(t[c], t[0]) for c in range(1, 4))
        assert same != pop.roles[name].is_head, name
