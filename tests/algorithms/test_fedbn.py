"""FedBN shares conv/linear weights only; BN tensors and biases never leave the client."""

import torch

from fedlab_cli.engine.session import RunSession
from fedlab_cli.models import Kind


def randomize(pop):
    torch.manual_seed(3)
    for t in pop.tensors().values():
        if t.is_floating_point():
            t.copy_(torch.rand_like(t) + 0.1)
    return {n: t.clone() for n, t in pop.tensors().items()}


def aggregate(session):
    pop = session.federation.population
    before = randomize(pop)
    clients = torch.arange(pop.num_clients)
    session.federation.method.aggregate(
        pop, clients, torch.ones(pop.num_clients, dtype=torch.float64), 0
    )
    return pop, before


def test_fedbn_leaves_bn_and_bias_untouched(make_spec, tmp_path):
    session = RunSession.start(make_spec(method={"name": "fedbn"}), tmp_path / "run")
    pop, before = aggregate(session)
    kinds_seen = set()
    for name, after in pop.tensors().items():
        kind = pop.roles[name].kind
        kinds_seen.add(kind)
        if kind is Kind.WEIGHT:
            for c in range(pop.num_clients):
                torch.testing.assert_close(after[c], before[name].mean(0))
        else:
            assert torch.equal(after, before[name]), name
    assert kinds_seen == {Kind.WEIGHT, Kind.BIAS, Kind.BN, Kind.BN_STAT}


def test_share_bias_averages_biases_too(make_spec, tmp_path):
    session = RunSession.start(
        make_spec(method={"name": "fedbn", "share_bias": True}), tmp_path / "run"
    )
    pop, before = aggregate(session)
    bias = "classifier.bias"
    torch.testing.assert_close(pop.params[bias][1], before[bias].mean(0))
    assert torch.equal(pop.params["features.1.weight"], before["features.1.weight"])
