"""FedAvg: one client is plain SGD; many clients average to the hand-computed weighted mean."""

import torch

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.models import build


def plain_sgd_reference(fed, rounds, epochs, batch_size, lr, momentum, orders):
    """torch.optim.SGD on an nn.Module, optimizer re-created every round (momentum reset)."""
    model = build("small_cnn", 10, in_channels=1)
    params, buffers = fed.population.client(0)
    model.load_state_dict({**params, **buffers})
    model.train()
    data = fed.data
    images = data.dataset.train_images.float() / 255
    labels = data.dataset.train_labels
    own = data.train_idx[0]
    step = 0
    for _ in range(rounds):
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        for _ in range(epochs):
            order = own[orders[step]] if orders else own
            step += 1
            for batch in order.split(batch_size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
                opt.step()
    return model.state_dict()


def test_one_client_equals_plain_sgd_full_batch(make_spec, tmp_path):
    resolved = make_spec(
        data={"num_clients": 1, "train_per_client": 30},
        training={"local_epochs": 3, "batch_size": 64, "lr": 0.05, "momentum": 0.9},
        federation={"rounds": 2},
    )
    session = RunSession.start(resolved, tmp_path / "run")
    expected = plain_sgd_reference(session.federation, 2, 3, 64, 0.05, 0.9, orders=None)
    run(session.federation)
    params, buffers = session.federation.population.client(0)
    for name, value in {**params, **buffers}.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_one_client_equals_plain_sgd_minibatches(make_spec, tmp_path):
    """With several mini-batches the shuffles come from the run's generator, seeded by ``seed``."""
    resolved = make_spec(
        data={"num_clients": 1, "train_per_client": 30},
        training={"local_epochs": 2, "batch_size": 8, "lr": 0.05, "momentum": 0.5},
        federation={"rounds": 2},
        seed=5,
    )
    session = RunSession.start(resolved, tmp_path / "run")
    g = torch.Generator().manual_seed(5)
    orders = [torch.randperm(30, generator=g) for _ in range(4)]
    expected = plain_sgd_reference(session.federation, 2, 2, 8, 0.05, 0.5, orders)
    run(session.federation)
    params, buffers = session.federation.population.client(0)
    for name, value in {**params, **buffers}.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_aggregate_is_the_weighted_mean_over_participants(make_spec, tmp_path):
    session = RunSession.start(make_spec(), tmp_path / "run")
    fed = session.federation
    pop = fed.population
    torch.manual_seed(1)
    for t in pop.tensors().values():
        if t.is_floating_point():
            t.copy_(torch.randn_like(t))
    before = {n: t.clone() for n, t in pop.tensors().items()}
    participants, weights = [0, 2, 3], [30.0, 10.0, 20.0]
    fed.method.aggregate(
        pop, torch.tensor(participants), torch.tensor(weights, dtype=torch.float64), 0
    )
    for name, after in pop.tensors().items():
        if not after.is_floating_point():
            assert torch.equal(after, before[name])  # num_batches_tracked: an integer count
            continue
        expected = sum(
            w * before[name][c] for c, w in zip(participants, weights, strict=True)
        ) / sum(weights)
        for c in range(pop.num_clients):  # every client, participant or not, gets the mean
            torch.testing.assert_close(after[c], expected, rtol=1e-5, atol=1e-6)


def test_run_records_both_accuracies_every_round(make_spec, tmp_path):
    session = RunSession.start(make_spec(), tmp_path / "run")
    run(session.federation, on_round=[session.on_round])
    summary = session.finish()
    assert len(session.records) == 3
    for record in session.records:
        assert len(record["acc_local_clients"]) == 4 and len(record["acc_agg_clients"]) == 4
        assert abs(record["acc_agg"] - sum(record["acc_agg_clients"]) / 4) < 1e-3
    # after FedAvg every client holds the same model, so acc_agg per client is that model's
    assert summary["final_metric"] == "acc_agg"
    assert summary["final_accuracy"] == session.records[-1]["acc_agg"]
