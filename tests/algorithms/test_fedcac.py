"""FedCAC: critical masks, the overlap matrix, the rising threshold, customized sync."""

import math

import pytest
import torch
from support import digits_context

from algorithms.fedcac import (
    FedCAC,
    FedCACParams,
    collaborators,
    critical_masks,
    overlap_matrix,
)
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build


def loop_mask(after, before, tau):
    """The reference rule, one client and one flat tensor at a time, with a full sort."""
    score = ((after - before) * after).abs().flatten()
    count = int(tau * score.numel())
    thresh = math.inf if count == 0 else float(score.sort(descending=True).values[count - 1])
    if thresh <= 1e-10:
        positive = score[score > 1e-20]
        if len(positive):
            thresh = float(positive.min())
    return (score >= thresh).view_as(after)


def test_critical_masks_follow_the_reference_rule():
    torch.manual_seed(0)
    before = torch.randn(5, 7, 6)
    after = before + torch.randn(5, 7, 6)
    after[1, :, :5] = before[1, :, :5]  # client 1: 35 of 42 scores are 0 → top-50% thresh 0
    after[2] = before[2]  # client 2: every score 0 → threshold stays 0: all entries critical
    after[3].view(-1)[:41] = before[3].view(-1)[:41]  # client 3: one positive score
    for tau in (0.5, 0.3, 0.03, 0.02):  # 0.02·42 < 1: no entry is critical
        masks = critical_masks(after, before, tau)
        for c in range(5):
            assert torch.equal(masks[c], loop_mask(after[c], before[c], tau)), (tau, c)
    masks = critical_masks(after, before, 0.5)
    assert masks[0].sum() == 21 and masks[1].sum() == 7 and masks[2].all()
    assert masks[3].sum() == 1 and not critical_masks(after, before, 0.02).any()


def test_overlap_matrix_equals_the_per_pair_formula():
    torch.manual_seed(1)
    k = 6
    density = torch.linspace(0.1, 0.8, k)
    masks = {
        "a": torch.rand(k, 4, 5) < density.view(k, 1, 1),
        "b": torch.rand(k, 13, 1, 1) < density.view(k, 1, 1, 1),
        "c": torch.rand(k, 3, 1, 1) < 0.5,
    }
    flat = torch.cat([m.reshape(k, -1).double() for m in masks.values()], dim=1)
    overlap = overlap_matrix(masks)
    assert overlap.shape == (k, k)
    for i in range(k):
        for j in range(k):
            expected = 1 - (flat[i] - flat[j]).abs().sum() / (2 * flat[i].sum())
            assert abs(float(overlap[i, j]) - float(expected)) < 1e-12, (i, j)
    assert not torch.allclose(overlap, overlap.T)  # normalised by client i's count: asymmetric


def loop_collaborators(overlap, round_index, beta):
    k = len(overlap)
    others = [float(overlap[i, j]) for i in range(k) for j in range(k) if i != j]
    mean = sum(others) / len(others)
    thr = mean + (round_index + 1) / beta * (max(others) - mean)
    return [[i == j or float(overlap[i, j]) >= thr for j in range(k)] for i in range(k)]


@pytest.fixture
def fedcac_session(make_spec, tmp_path):
    def make(beta):
        spec = make_spec(
            method={"name": "fedcac", "tau": 0.5, "beta": beta}, data={"num_clients": 5}
        )
        return RunSession.start(spec, tmp_path / f"run{beta}")

    return make


def randomize(session, seed):
    """Random weights per client and random critical masks of varied density."""
    method = session.federation.method
    pop = session.federation.population
    gen = torch.Generator().manual_seed(seed)
    for t in pop.tensors().values():
        if t.is_floating_point():
            t.copy_(torch.randn(t.shape, generator=gen))
    k = pop.num_clients
    density = torch.tensor([0.2, 0.25, 0.5, 0.55, 0.8])
    method.critical = {
        n: torch.rand(p.shape, generator=gen) < density.view(k, *[1] * (p.dim() - 1))
        for n, p in pop.params.items()
    }
    return {n: t.clone() for n, t in pop.tensors().items()}, dict(method.critical)


def test_critical_entries_follow_the_collaborators_average(fedcac_session):
    session = fedcac_session(beta=10**6)
    method, pop = session.federation.method, session.federation.population
    before, masks = randomize(session, seed=2)
    weights = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0], dtype=torch.float64)
    method.aggregate(pop, torch.arange(5), weights, round_index=4)

    flat = torch.cat([m.reshape(5, -1).double() for m in masks.values()], dim=1)
    overlap = [
        [float(1 - (flat[i] - flat[j]).abs().sum() / (2 * flat[i].sum())) for j in range(5)]
        for i in range(5)
    ]
    works_with = loop_collaborators(torch.tensor(overlap), 4, 10**6)
    sizes = [sum(row) for row in works_with]
    assert max(sizes) > 1 and min(sizes) < 5  # a threshold that really selects
    for name, value in before.items():
        if name not in pop.params:  # BN running statistics: untouched by sync
            assert torch.equal(pop.buffers[name], value), name
            continue
        glob = sum(w * value[c] for c, w in enumerate(weights.tolist())) / weights.sum()
        for i in range(5):
            team = [j for j in range(5) if works_with[i][j]]
            customized = sum(value[j] for j in team) / len(team)
            expected = torch.where(masks[name][i], customized, glob.float())
            torch.testing.assert_close(pop.params[name][i], expected, rtol=1e-5, atol=1e-6)
    assert float(method.round_metrics()["fedcac_collaborators"]) == pytest.approx(sum(sizes) / 5)


def test_from_round_beta_on_critical_entries_stay_local(fedcac_session):
    session = fedcac_session(beta=3)
    method, pop = session.federation.method, session.federation.population
    before, masks = randomize(session, seed=4)
    weights = torch.ones(5, dtype=torch.float64)
    method.aggregate(pop, torch.arange(5), weights, round_index=2)  # (r+1) = β
    for name, after in pop.params.items():
        glob = before[name].mean(0).expand_as(after)
        expected = torch.where(masks[name], before[name], glob)
        torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)
    assert float(method.round_metrics()["fedcac_collaborators"]) == 1.0


def test_collaborators_use_off_diagonal_mean_and_max():
    torch.manual_seed(5)
    overlap = torch.rand(6, 6, dtype=torch.float64)
    overlap.fill_diagonal_(1.0)
    for r in (0, 20, 48):
        expected = loop_collaborators(overlap, r, 50)
        assert collaborators(overlap, r, 50).tolist() == expected, r
    assert torch.equal(collaborators(overlap, 49, 50), torch.eye(6, dtype=torch.bool))


@pytest.mark.parametrize(
    ("dataset", "params", "expected"),
    [
        ("cifar10", {}, (0.5, 100)),
        ("cifar100", {}, (0.4, 170)),
        ("tinyimagenet", {}, (0.4, 170)),
        ("digits", {}, (0.5, 100)),
        ("cifar100", {"tau": 0.25, "beta": 7}, (0.25, 7)),
    ],
)
def test_tau_and_beta_default_per_dataset(dataset, params, expected):
    pop = Population.replicate(build("small_cnn", 10, in_channels=1), 2, torch.device("cpu"))
    method = FedCAC(FedCACParams(**params))
    method.setup(pop, digits_context(dataset))
    assert (method.tau, method.beta) == expected


@pytest.mark.parametrize("override", ["method.tau=0", "method.tau=1.5", "method.beta=0"])
def test_bad_values_are_one_line_errors(make_spec, override):
    key = override.split("=")[0]
    with pytest.raises(FedlabError, match=rf"^{key}: "):
        make_spec(method={"name": "fedcac"}, overrides=[override])


def test_runs_end_to_end_and_resumes_exactly(make_spec, tmp_path):
    spec = make_spec(
        method={"name": "fedcac", "beta": 2},
        federation={"rounds": 3},
        output={"checkpoint_every": 2},
    )
    full = RunSession.start(spec, tmp_path / "full")
    run(full.federation, on_round=[full.on_round])
    summary = full.finish()
    for record in full.records:
        assert math.isfinite(record["acc_local"]) and math.isfinite(record["acc_agg"])
        assert 0 < record["fedcac_critical_share"] <= 1
    assert full.records[0]["fedcac_collaborators"] > 1  # round 0: threshold at the mean
    assert full.records[2]["fedcac_collaborators"] == 1  # (r+1) ≥ β: alone
    broken = RunSession.start(spec, tmp_path / "broken")
    while broken.federation.next_round < 2:  # stops after round 1, its checkpoint
        broken.on_round(broken.federation.run_round())
    resumed = RunSession.resume(tmp_path / "broken")
    run(resumed.federation, on_round=[resumed.on_round])
    assert resumed.finish()["final_accuracy"] == summary["final_accuracy"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.run_dir.metrics()]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.run_dir.metrics()] == (
        strip
    )
