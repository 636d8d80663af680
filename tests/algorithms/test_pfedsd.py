"""pFedSD: FedAvg plus self-distillation from each client's previous personalized model."""

import dataclasses
import math

import pytest
import torch
from support import strip_time

from algorithms.pfedsd import PFedSD
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.method import Block
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build


def run_to_end(session):
    run(session.federation, on_round=[session.on_round])
    return session.finish()


def test_lambda_zero_is_fedavg_evaluated_locally_and_lambda_adds_kl(make_spec, tmp_path):
    small = {"data": {"num_clients": 3}, "federation": {"rounds": 2}}
    fedavg = RunSession.start(make_spec(**small), tmp_path / "fedavg")
    zero = RunSession.start(
        make_spec(method={"name": "pfedsd", "lam": 0.0}, **small), tmp_path / "0"
    )
    half = RunSession.start(make_spec(method={"name": "pfedsd"}, **small), tmp_path / "half")
    run_to_end(fedavg)
    summary = run_to_end(zero)
    run_to_end(half)
    assert strip_time(zero.records) == strip_time(fedavg.records)
    for name, t in fedavg.federation.population.tensors().items():
        assert torch.equal(zero.federation.population.tensors()[name], t), name
    assert all(zero.federation.method.has_teacher)  # so round 1 ran teachers, weighted by 0
    assert summary["final_metric"] == "acc_local"
    assert summary["final_accuracy"] == zero.records[-1]["acc_local"]
    # λ = 0.5: round 0 has no teacher yet; from round 1 on the loss carries the KL term (≥ 0)
    assert half.records[0]["loss"] == zero.records[0]["loss"]
    assert half.records[1]["loss"] > zero.records[1]["loss"] + 1e-3
    for record in half.records:
        assert math.isfinite(record["acc_local"]) and math.isfinite(record["acc_agg"])


def teachers(population, group):
    """The stored teachers' ``params`` or ``buffers``, ``[C, ...]`` (declared client state)."""
    prefix = f"teacher.{group}."
    return {n[len(prefix) :]: t for n, t in population.state.items() if n.startswith(prefix)}


def block_of(fed, clients):
    rows = torch.tensor(clients)
    state = {n: t[rows] for n, t in fed.population.state.items()}
    return Block(clients, rows, 1, state, fed.strategy.forward)


def hand_loss(student, teacher, lam, temperature):
    """λ·τ²·(1/B)·Σ_b Σ_k p_bk·(log p_bk − log q_bk), p = softmax(t/τ), q = softmax(s/τ)."""
    log_p = torch.log_softmax(teacher.double() / temperature, dim=1)
    log_q = torch.log_softmax(student.double() / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum() / student.shape[0]
    return lam * temperature**2 * kl


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_extra_loss_is_the_hand_computed_distillation_term(make_spec, tmp_path, mode):
    spec = make_spec(
        method={"name": "pfedsd", "lam": 0.7, "temperature": 2.5, "teacher_mode": mode}
    )
    fed = RunSession.start(spec, tmp_path / "run").federation
    method, pop = fed.method, fed.population
    torch.manual_seed(0)
    for group in ("params", "buffers"):
        for t in teachers(pop, group).values():
            if t.is_floating_point():
                t.add_(0.3 * torch.rand_like(t))
    method.has_teacher[2] = True
    pop.state["teacher.ready"][2] = True
    stored = {n: t.clone() for n, t in teachers(pop, "buffers").items()}
    x = fed.data.dataset.train_images[fed.data.train_idx[2][:16]].float() / 255
    logits = torch.randn(16, 10)

    teacher = build("small_cnn", 10, in_channels=1)
    teacher.load_state_dict(
        {
            **{n: t[2] for n, t in teachers(pop, "params").items()},
            **{n: t[2].clone() for n, t in teachers(pop, "buffers").items()},
        }
    )
    teacher.train(mode == "train")
    with torch.no_grad():
        expected = hand_loss(logits, teacher(x), 0.7, 2.5)

    fed.strategy.precision.train(True)  # as during local training
    params = {n: t[[1, 2]] for n, t in pop.params.items()}
    inputs, both = torch.stack([x, x]), torch.stack([torch.randn(16, 10), logits])
    value = method.extra_loss(block_of(fed, [1, 2]), params, inputs, both)
    assert value[0] == 0  # client 1 has no teacher yet: nothing added
    torch.testing.assert_close(value[1].double(), expected, rtol=1e-5, atol=1e-7)
    assert fed.model.training  # the eval-mode teacher leaves the student in train mode
    for name, t in teachers(pop, "buffers").items():  # the stored teacher is not touched
        assert torch.equal(t, stored[name]), name
    alone = method.extra_loss(
        block_of(fed, [1]), {n: t[[1]] for n, t in pop.params.items()}, x[None], logits[None]
    )
    assert alone is None  # a block without any teacher adds no term


def test_train_and_eval_teachers_differ(make_spec, tmp_path):
    values = {}
    for mode in ("train", "eval"):
        spec = make_spec(method={"name": "pfedsd", "teacher_mode": mode})
        fed = RunSession.start(spec, tmp_path / mode).federation
        fed.method.has_teacher[0] = True
        x = fed.data.dataset.train_images[fed.data.train_idx[0]].float() / 255
        fed.strategy.precision.train(True)
        params = {n: t[[0]] for n, t in fed.population.params.items()}
        value = fed.method.extra_loss(
            block_of(fed, [0]), params, x[None], torch.zeros(1, len(x), 10)
        )
        values[mode] = float(value[0])
    assert abs(values["train"] - values["eval"]) > 1e-4


class Snapshot(PFedSD):
    """Keeps the population as local training left it, before aggregation."""

    def aggregate(self, population, participants, weights, round_index):
        self.trained = {n: t.clone() for n, t in population.tensors().items()}
        super().aggregate(population, participants, weights, round_index)


def test_teacher_is_each_participants_model_after_local_training(make_spec, tmp_path):
    spec = make_spec(
        method={"name": "pfedsd"},
        data={"num_clients": 4},
        training={"local_epochs": 1},
        federation={"rounds": 1, "participation": 0.5},
    )
    session = RunSession.start(dataclasses.replace(spec, method_cls=Snapshot), tmp_path / "r")
    fed = session.federation
    run(fed)
    method = fed.method
    chosen = fed.participants(0)
    assert method.has_teacher == [c in chosen for c in range(4)]
    ready = fed.population.state["teacher.ready"]
    assert ready.tolist() == [c in chosen for c in range(4)]
    pop = fed.population
    for name, t in {**teachers(pop, "params"), **teachers(pop, "buffers")}.items():
        assert torch.equal(t[chosen], method.trained[name][chosen]), name
        if t.is_floating_point():  # the aggregated model is not the teacher
            assert not torch.equal(t[chosen], fed.population.tensors()[name][chosen]), name


def test_resume_equals_uninterrupted_run(make_spec, tmp_path):
    spec = make_spec(
        method={"name": "pfedsd"},
        federation={"rounds": 3, "participation": 0.5},
        output={"checkpoint_every": 2},
    )
    full = RunSession.start(spec, tmp_path / "full")
    full_summary = run_to_end(full)
    broken = RunSession.start(spec, tmp_path / "broken")
    while broken.federation.next_round < 2:  # stops after round 1, its checkpoint
        broken.on_round(broken.federation.run_round())
    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2
    assert any(resumed.federation.method.has_teacher)  # teachers came back from the checkpoint
    assert run_to_end(resumed)["final_accuracy"] == full_summary["final_accuracy"]
    assert strip_time(resumed.run_dir.metrics()) == strip_time(full.run_dir.metrics())


@pytest.mark.parametrize(
    "override", ["method.lam=-0.1", "method.temperature=0", "method.teacher_mode=test"]
)
def test_bad_values_are_one_line_errors(make_spec, override):
    key = override.split("=")[0]
    with pytest.raises(FedlabError, match=rf"^{key}: "):
        make_spec(method={"name": "pfedsd"}, overrides=[override])
