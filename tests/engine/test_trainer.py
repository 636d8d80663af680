"""The one training core: optimizers and their state across rounds, clipping, schedules,
unequal client sizes, block hooks on batched tensors, and out-of-memory retries."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from support import Crash, crash_after, fail_chunks_above, strip_time

from fedlab_cli.data.augment import test_transform, train_transform
from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.data.synthetic import make_synthetic
from fedlab_cli.engine.client_data import ClientData
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.method import Method
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.session import RunSession
from fedlab_cli.engine.strategies import SequentialStrategy, VectorizedStrategy
from fedlab_cli.models import build
from fedlab_cli.spec.model import TrainingSpec


def start(make_spec, tmp_path, name="run", method_cls=None, **sections):
    resolved = make_spec(**sections)
    if method_cls is not None:
        resolved = dataclasses.replace(resolved, method_cls=method_cls)
    return RunSession.start(resolved, tmp_path / name)


def finished(session):
    run(session.federation, on_round=[session.on_round])
    summary = session.finish()
    summary.pop("wall_seconds")
    return summary


# -- optimizers across rounds ------------------------------------------------------------------


def epoch_orders(seed, clients, rounds, epochs, n):
    """The RNG contract (engine/plan.py), stated independently: one generator seeded by the
    run seed; per round, participant by participant, epoch by epoch, ``randperm(n)`` (digits
    draws no augmentation)."""
    g = torch.Generator().manual_seed(seed)
    orders = {}
    for r in range(rounds):
        for c in range(clients):
            for e in range(epochs):
                orders[r, c, e] = torch.randperm(n, generator=g)
    return orders


def torch_adam_reference(fed, client, start, rounds, epochs, lr, keep):
    """The client's local training as one torch model with torch.optim.Adam (full batches, in
    the engine's sample order)."""
    model = build("small_cnn", 10, in_channels=1).train()
    model.load_state_dict(start)
    own = fed.data.train_idx[client]
    orders = epoch_orders(fed.spec.seed, fed.spec.data.num_clients, rounds, epochs, len(own))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for r in range(rounds):
        if not keep:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for e in range(epochs):
            batch = own[orders[r, client, e]]
            images = fed.data.dataset.train_images[batch].float() / 255
            labels = fed.data.dataset.train_labels[batch]
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize("keep", [False, True], ids=["reset", "keep"])
def test_adam_state_reset_or_kept_equals_torch_adam(make_spec, tmp_path, keep):
    """Separate (no aggregation), full-batch steps: each client's 3 rounds x 2 epochs are one
    torch model under torch.optim.Adam, re-created every round (reset) or not (keep) — bit for
    bit (one model's arithmetic: sequential strategy, contiguous layout)."""
    session = start(
        make_spec,
        tmp_path,
        method={"name": "separate"},
        data={"num_clients": 2, "train_per_client": 30},
        training={
            "optimizer": "adam",
            "lr": 0.01,
            "local_epochs": 2,
            "batch_size": 30,
            "optimizer_state": "keep" if keep else "reset",
        },
        federation={"rounds": 3},
        engine={"strategy": "sequential", "layout": "contiguous"},
    )
    fed = session.federation
    starts = [{n: t[c].clone() for n, t in fed.population.tensors().items()} for c in range(2)]
    run(fed)
    for c in range(2):
        expected = torch_adam_reference(fed, c, starts[c], 3, 2, 0.01, keep)
        for name, tensor in expected.items():
            assert torch.equal(fed.population.tensors()[name][c], tensor), (c, name)
    steps = fed.population.optimizer_steps
    assert steps == ([6, 6] if keep else [0, 0])
    assert bool(fed.population.optimizer) == keep  # kept state lives with the clients


def test_kept_optimizer_state_resumes_bit_exactly(make_spec, tmp_path):
    sections = {
        "method": {"name": "fedavg"},
        "training": {"optimizer": "adam", "lr": 0.01, "optimizer_state": "keep"},
        "federation": {"rounds": 4, "participation": 0.5},
        "output": {"checkpoint_every": 2},
    }
    full = start(make_spec, tmp_path, "full", **sections)
    full_summary = finished(full)
    broken = start(make_spec, tmp_path, "broken", **sections)
    with pytest.raises(Crash):
        run(broken.federation, on_round=[broken.on_round, crash_after(2)])
    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2
    assert finished(resumed) == full_summary
    assert strip_time(resumed.run_dir.metrics()) == strip_time(full.run_dir.metrics())
    a, b = full.federation.population, resumed.federation.population
    assert a.optimizer_steps == b.optimizer_steps
    for name, slots in a.optimizer.items():
        for slot, tensor in slots.items():
            assert torch.equal(tensor, b.optimizer[name][slot]), (name, slot)


# -- clipping and schedules ---------------------------------------------------------------------


class LastGradients(Method):
    aggregates = False
    wants_last_gradients = True

    def after_local_training(self, population, clients, round_index, trace):
        self.trace = trace


def one_step_session(make_spec, tmp_path, name, **training):
    return start(
        make_spec,
        tmp_path,
        name,
        method_cls=LastGradients,
        data={"num_clients": 2, "train_per_client": 30},
        training={"local_epochs": 1, "batch_size": 30, "momentum": 0.0, **training},
        federation={"rounds": 3},
        engine={"strategy": "sequential"},
    )


def hand_gradient(fed, client, params, buffers):
    images = fed.data.dataset.train_images[fed.data.train_idx[client]].float() / 255
    labels = fed.data.dataset.train_labels[fed.data.train_idx[client]]
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    loss = F.cross_entropy(
        fed.strategy.one_model(leaves, dict(buffers), images, train=True), labels
    )
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))


def test_clipping_in_training_is_clip_grad_norm_before_the_step(make_spec, tmp_path):
    session = one_step_session(make_spec, tmp_path, "clip", lr=0.1, grad_clip=0.05)
    fed = session.federation
    pop = fed.population
    params = {n: t[1].clone() for n, t in pop.params.items()}
    buffers = {n: t[1].clone() for n, t in pop.buffers.items()}
    fed.run_round()
    grads = hand_gradient(fed, 1, params, buffers)
    holders = []
    for g in grads.values():
        holder = torch.zeros_like(g, requires_grad=True)
        holder.grad = g.clone()
        holders.append(holder)
    total = torch.nn.utils.clip_grad_norm_(holders, 0.05)
    assert total > 0.05  # the bound really bites
    for (name, start), holder in zip(params.items(), holders, strict=True):
        torch.testing.assert_close(
            pop.params[name][1], start - 0.1 * holder.grad, rtol=1e-5, atol=1e-7, msg=name
        )


def test_exponential_schedule_sets_each_rounds_lr(make_spec, tmp_path):
    session = one_step_session(
        make_spec, tmp_path, "exp", lr=0.2, lr_schedule={"name": "exponential", "gamma": 0.5}
    )
    fed = session.federation
    name = "classifier.weight"
    for r in range(3):
        before = fed.population.params[name][0].clone()
        fed.run_round()
        grad = fed.method.trace.last_grads[name][0]
        step = fed.population.params[name][0] - before
        torch.testing.assert_close(step, -0.2 * 0.5**r * grad, rtol=1e-5, atol=1e-8)


def test_epoch_schedule_sets_each_local_epochs_lr(make_spec, tmp_path):
    """unit: epoch, cycle 2: epoch 0 at lr, epoch 1 at (lr + eta_min)/2, in every round."""
    session = one_step_session(
        make_spec,
        tmp_path,
        "epochs",
        lr=0.2,
        local_epochs=2,
        lr_schedule={"name": "cosine_restarts", "cycle": 2, "eta_min": 0.02, "unit": "epoch"},
    )
    fed = session.federation
    name = "classifier.weight"
    pop = fed.population
    for _ in range(2):
        params = {n: t[0].clone() for n, t in pop.params.items()}
        buffers = {n: t[0].clone() for n, t in pop.buffers.items()}
        first = hand_gradient(fed, 0, params, buffers)
        fed.run_round()
        # epoch 0 (one full batch) at lr 0.2; epoch 1's gradient is the trace's last one
        after_first = params[name] - 0.2 * first[name]
        last = fed.method.trace.last_grads[name][0]
        expected = after_first - (0.02 + 0.18 * 0.5) * last
        torch.testing.assert_close(pop.params[name][0], expected, rtol=1e-5, atol=1e-7)


# -- unequal client sizes -------------------------------------------------------------------------


def test_clients_of_different_sizes_give_the_same_numbers_in_both_strategies():
    """Sizes 9, 14, 9, 12, 14: three groups, batches of 5 (uneven last batches)."""
    ds = make_synthetic("unit", (3, 16, 16), 4, 120, 60, seed=1)
    g = torch.Generator().manual_seed(0)
    sizes = [9, 14, 9, 12, 14]
    splits = ClientSplits(
        train=[torch.randperm(120, generator=g)[:n].numpy() for n in sizes],
        test=[torch.randperm(60, generator=g)[: n + 1].numpy() for n in sizes],
    )
    data = ClientData.build(
        ds,
        splits,
        torch.device("cpu"),
        train_transform("cifar100", True),
        test_transform("cifar100"),
    )
    training = TrainingSpec(local_epochs=2, batch_size=5, lr=0.05, momentum=0.9)
    torch.manual_seed(0)
    model = build("small_cnn", 4, in_channels=3)
    out = []
    for strategy in (
        SequentialStrategy(model, training),
        VectorizedStrategy(model, training, "cpu", image_shape=(3, 16, 16)),
    ):
        torch.manual_seed(5)
        pop = Population.replicate(model, 5, torch.device("cpu"))
        for t in pop.params.values():
            t.add_(0.05 * torch.randn_like(t))
        gen = torch.Generator().manual_seed(3)
        trace = strategy.train(pop, [4, 0, 3, 1, 2], data, gen, Method(Method.Params()), 0)
        out.append((pop, trace, gen, strategy.evaluate(pop, data)))
    (pop_s, trace_s, gen_s, acc_s), (pop_v, trace_v, gen_v, acc_v) = out
    assert torch.equal(gen_s.get_state(), gen_v.get_state())
    assert trace_s.steps == trace_v.steps == [2 * 3, 2 * 2, 2 * 3, 2 * 3, 2 * 2]  # 14,9,12,14,9
    torch.testing.assert_close(trace_v.losses, trace_s.losses, rtol=1e-5, atol=1e-6)
    for name, tensor in pop_s.tensors().items():
        torch.testing.assert_close(pop_v.tensors()[name], tensor, rtol=1e-4, atol=1e-5)
    assert torch.equal(acc_v, acc_s)
    # accuracy is each client's own count over its own test size (n + 1)
    for accuracy, n in zip(acc_s.tolist(), sizes, strict=True):
        correct = accuracy * (n + 1) / 100
        assert correct == pytest.approx(round(correct), abs=1e-9)


# -- hooks and out-of-memory retries --------------------------------------------------------------


class StepCounter(Method):
    """Counts each client's local steps in declared client state, from inside the block."""

    def setup(self, population, context):
        super().setup(population, context)
        population.add_state("steps", torch.zeros(population.num_clients, dtype=torch.long))

    def after_step(self, block, params, optimizer_state):
        block.state["steps"] += 1


def test_a_block_out_of_memory_mid_way_counts_no_hook_twice(make_spec, tmp_path, monkeypatch):
    sections = {
        "data": {"num_clients": 4},
        "federation": {"rounds": 2},
        "engine": {"strategy": "vectorized", "chunk_size": 4},
    }
    clean = start(make_spec, tmp_path, "clean", method_cls=StepCounter, **sections)
    finished(clean)
    fail_chunks_above(monkeypatch, 2, after_steps=3)  # 3 steps (and hooks) in, then OOM
    retried = start(make_spec, tmp_path, "retried", method_cls=StepCounter, **sections)
    finished(retried)
    assert retried.federation.strategy.chunks.cap == 2  # it did halve
    expected = 2 * 2 * 2  # rounds x epochs x batches (30 samples, batch 16)
    assert retried.federation.population.state["steps"].tolist() == [expected] * 4
    assert strip_time(retried.records) == strip_time(clean.records)


def test_lips_persistent_out_of_memory_retry_leaves_every_metric(make_spec, tmp_path, monkeypatch):
    sections = {
        "method": {"name": "lips", "sparsity": "persistent", "interval": 2},
        "federation": {"rounds": 4},
        "engine": {"strategy": "vectorized", "chunk_size": 4},
    }
    clean = finished(start(make_spec, tmp_path, "clean", **sections))
    fail_chunks_above(monkeypatch, 2, after_steps=2)
    retried_session = start(make_spec, tmp_path, "retried", **sections)
    retried = finished(retried_session)
    assert retried_session.federation.strategy.chunks.cap == 2
    assert retried == clean  # mean_density and train_flops_rel included
    assert retried["mean_density"] < 1


def test_fedprox_gradient_is_ce_plus_mu_times_distance_to_the_global(make_spec, tmp_path):
    """Two steps of FedProx: the second step's gradient, recomputed by hand, carries
    μ·(w − w_global) beside the cross-entropy gradient."""
    session = start(
        make_spec,
        tmp_path,
        method={"name": "fedprox", "mu": 0.5},
        data={"num_clients": 2, "train_per_client": 30},
        training={"local_epochs": 2, "batch_size": 30, "momentum": 0.0, "lr": 0.1},
        federation={"rounds": 1},
        engine={"strategy": "sequential"},
    )
    fed = session.federation
    pop = fed.population
    w0 = {n: t[0].clone() for n, t in pop.params.items()}
    buffers = {n: t[0].clone() for n, t in pop.buffers.items()}
    after = {}

    real = fed.method.after_local_training

    def keep(population, clients, round_index, trace):
        after.update({n: t[0].clone() for n, t in population.params.items()})
        real(population, clients, round_index, trace)

    fed.method.after_local_training = keep
    fed.run_round()
    g1 = hand_gradient(fed, 0, w0, buffers)  # at w_global the proximal term is 0
    w1 = {n: w0[n] - 0.1 * g1[n] for n in w0}
    g2 = hand_gradient(fed, 0, w1, buffers)
    for name in w0:
        expected = w1[name] - 0.1 * (g2[name] + 0.5 * (w1[name] - w0[name]))
        torch.testing.assert_close(after[name], expected, rtol=1e-4, atol=1e-6, msg=name)
