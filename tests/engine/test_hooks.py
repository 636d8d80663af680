"""The local-training hooks methods build on: phases, extra loss, per-step and trace hooks."""

import dataclasses

import torch
import torch.nn.functional as F

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.method import Method, Phase
from fedlab_cli.engine.session import RunSession


def start(make_spec, tmp_path, method_cls, **sections):
    resolved = make_spec(**sections)
    resolved = dataclasses.replace(resolved, method_cls=method_cls)
    return RunSession.start(resolved, tmp_path / "run")


class HeadOnly(Method):
    aggregates = False

    def local_phases(self, round_index, local_epochs):
        return [Phase(local_epochs, lambda name, role: role.is_head)]


def test_a_phase_updates_only_its_parameters(make_spec, tmp_path):
    session = start(make_spec, tmp_path, HeadOnly, federation={"rounds": 1})
    pop = session.federation.population
    before = {n: t.clone() for n, t in pop.params.items()}
    run(session.federation)
    for name, after in pop.params.items():
        changed = not torch.equal(after, before[name])
        assert changed == pop.roles[name].is_head, name


class Recorder(Method):
    wants_last_gradients = True
    aggregates = False

    def setup(self, population, context):
        super().setup(population, context)
        self.steps = 0
        self.extra_values = []

    def extra_loss(self, block, params, inputs, logits):
        value = 0.1 * logits.pow(2).flatten(1).mean(1)
        self.extra_values += value.detach().tolist()
        return value

    def after_step(self, block, params, optimizer_state):
        self.steps += len(block.clients)

    def after_local_training(self, population, clients, round_index, trace):
        self.trace = trace


def test_extra_loss_steps_and_last_gradients(make_spec, tmp_path):
    session = start(
        make_spec,
        tmp_path,
        Recorder,
        data={"num_clients": 2, "train_per_client": 30},
        training={"local_epochs": 2, "batch_size": 30, "momentum": 0.0, "lr": 0.05},
        federation={"rounds": 1},
    )
    fed = session.federation
    pop = fed.population
    start_params = {n: t[1].clone() for n, t in pop.params.items()}
    start_buffers = {n: t[1].clone() for n, t in pop.buffers.items()}
    run(fed, on_round=[session.on_round])
    method = fed.method
    assert method.steps == 2 * 2  # clients x epochs x one full batch
    trace = method.trace
    assert trace.clients == [0, 1] and trace.last_grads is not None

    # Recompute client 1's last-step gradient by hand: one full-batch step, then the gradient
    # of CE + 0.1 * mean(logits^2) at the updated weights (full batch: order does not matter).
    images = fed.data.dataset.train_images[fed.data.train_idx[1]].float() / 255
    labels = fed.data.dataset.train_labels[fed.data.train_idx[1]]
    params = {n: p.clone().requires_grad_(True) for n, p in start_params.items()}
    buffers = {n: b.clone() for n, b in start_buffers.items()}
    fed.model.train()
    for step in range(2):
        logits = fed.strategy.one_model(params, buffers, images, train=True)
        loss = F.cross_entropy(logits, labels) + 0.1 * logits.pow(2).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        if step == 0:
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p -= 0.05 * g
    for name, g in zip(params, grads, strict=True):
        torch.testing.assert_close(trace.last_grads[name][1], g, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(trace.last_grad_norms[name][1], g.norm(), rtol=1e-4, atol=1e-6)
    # the round record carries the mean over clients of each tensor's last-batch gradient norm
    record = session.records[0]
    name = "classifier.weight"
    assert abs(record["grad_norms"][name] - float(trace.last_grad_norms[name].mean())) < 1e-6
    assert all(v > 0 for v in method.extra_values)
