"""FedPM: the Bayesian aggregation by hand, bits per parameter, strategies, resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from support import Crash, crash_after, digits_context, strip_time
from torch import nn

from algorithms.fedpm import FedPM, FedPMParams
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.method import binary_entropy
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import assign_roles
from fedlab_cli.models.masked import masked

EPS = 0.01
N = 3 * 4 + 3  # one masked Linear(4, 3): weight and bias scores


def tiny_population(clients: int) -> Population:
    torch.manual_seed(0)
    model = masked(nn.Sequential(nn.Linear(4, 3)))
    model.roles = assign_roles(model)
    return Population.replicate(model, clients, torch.device("cpu"))


def method(population: Population, **params) -> FedPM:
    fedpm = FedPM(FedPMParams(**params))
    fedpm.setup(population, digits_context())
    return fedpm


def set_bits(population: Population, bits: list[list[int]]) -> None:
    """Client c's scores at ±∞, so its uploaded sample is exactly ``bits[c]`` (θ ∈ {0, 1})."""
    flat = torch.tensor(bits, dtype=torch.float32)
    start = 0
    for tensor in population.params.values():
        size = tensor[0].numel()
        part = flat[:, start : start + size].view(-1, *tensor.shape[1:])
        tensor.copy_(torch.where(part > 0, math.inf, -math.inf))
        start += size


def aggregate(fedpm: FedPM, population: Population, clients, round_index, weights=None):
    fedpm.before_local_training(population, clients, round_index)
    rows = population.index(clients)
    counts = torch.tensor(weights or [1.0] * len(clients), dtype=torch.float64)
    fedpm.aggregate(population, rows, counts, round_index)


def global_p(population: Population) -> torch.Tensor:
    """Every client's sigmoid(score), flattened; all clients must hold the same."""
    flat = torch.cat([torch.sigmoid(t).flatten(1) for t in population.params.values()], 1)
    assert torch.equal(flat, flat[:1].expand_as(flat))
    return flat[0].double()


def pattern(seed: int) -> list[int]:
    return torch.randint(0, 2, (N,), generator=torch.Generator().manual_seed(seed)).tolist()


def smoothed(bits: list[int]) -> torch.Tensor:
    return torch.tensor([1 - EPS if b else EPS for b in bits], dtype=torch.float64)


# -- the posterior ------------------------------------------------------------------------------


def test_one_client_gets_its_own_smoothed_bits():
    population = tiny_population(1)
    fedpm = method(population)
    bits = pattern(0)
    set_bits(population, [bits])
    aggregate(fedpm, population, [0], 0)
    torch.testing.assert_close(global_p(population), smoothed(bits), rtol=0, atol=1e-6)


@pytest.mark.parametrize("weighting", ["uniform", "samples"])
def test_several_clients_get_the_uniform_or_sample_weighted_mean(weighting):
    population = tiny_population(4)
    fedpm = method(population, weighting=weighting)
    bits = [pattern(c) for c in range(4)]
    set_bits(population, bits)
    counts = [10.0, 30.0, 60.0]  # clients 0, 2, 3 take part
    aggregate(fedpm, population, [0, 2, 3], 0, counts)
    w = [1.0, 1.0, 1.0] if weighting == "uniform" else counts
    expected = sum(wi * smoothed(bits[c]) for wi, c in zip(w, [0, 2, 3], strict=True)) / sum(w)
    torch.testing.assert_close(global_p(population), expected, rtol=0, atol=1e-6)


def test_a_longer_reset_period_accumulates_the_posterior_over_rounds():
    """R = 2: α = β = 1 at rounds 0 and 2. Round 0: 2 clients, round 1: 1 client (on top),
    round 2: fresh prior, 2 clients. p = (α − 1)/(α + β − 2)."""
    population = tiny_population(2)
    fedpm = method(population, prior_reset_every=2)
    rounds = [([0, 1], [pattern(1), pattern(2)]), ([1], [pattern(3)]), ([0, 1], [pattern(4)] * 2)]
    alpha = beta = None
    for t, (clients, bits) in enumerate(rounds):
        full = [bits[clients.index(c)] if c in clients else [0] * N for c in range(2)]
        set_bits(population, full)
        aggregate(fedpm, population, clients, t)
        if t % 2 == 0:
            alpha, beta = torch.ones(N, dtype=torch.float64), torch.ones(N, dtype=torch.float64)
        for b in bits:
            alpha = alpha + smoothed(b)
            beta = beta + (1 - smoothed(b))
        expected = (alpha - 1) / (alpha + beta - 2)
        torch.testing.assert_close(global_p(population), expected, rtol=0, atol=1e-6)
        if t == 1:  # the mean of rounds 0 and 1's three uploads, not round 1's alone (R = 1)
            three = [*rounds[0][1], rounds[1][1][0]]
            torch.testing.assert_close(expected, sum(map(smoothed, three)) / 3)
            assert not torch.allclose(expected, smoothed(bits[0]))


# -- bits ---------------------------------------------------------------------------------------


def test_bpp_is_the_ideal_code_of_the_raw_bits_and_below_one_off_half():
    population = tiny_population(2)
    fedpm = method(population)
    bits = [[1] * 3 + [0] * (N - 3), [1] * 7 + [0] * (N - 7)]
    set_bits(population, bits)
    aggregate(fedpm, population, [0, 1], 0)
    metrics = {k: float(v) for k, v in fedpm.round_metrics().items()}

    def rate(ones: int) -> float:
        f = ones / N
        h = -(f * math.log2(f) + (1 - f) * math.log2(1 - f))
        return (N * h + math.log2(N)) / N

    assert metrics["bpp"] == pytest.approx((rate(3) + rate(7)) / 2, rel=1e-12)
    assert metrics["ones_fraction"] == pytest.approx((3 + 7) / (2 * N))
    assert metrics["uplink_raw_bits"] == 2 * N
    assert metrics["mask_density_mean"] == pytest.approx(float(global_p(population).mean()))
    traffic = fedpm.communication(population, [0, 1], 0)
    assert traffic.uplink_bits == pytest.approx(N * (rate(3) + rate(7)))
    assert traffic.downlink_bits == 32 * N * 2
    # H_b < 1 away from f = 1/2, so a large mask codes below 1 bit per entry
    n = 100_000
    f = torch.tensor([0.45, 0.5, 0.55], dtype=torch.float64)
    bpp = (n * binary_entropy(f) + math.log2(n)) / n
    assert bpp[0] < 1 and bpp[2] < 1 and bpp[1] > 1


# -- the global model's mask --------------------------------------------------------------------


@pytest.mark.parametrize("eval_mask", ["sample", "threshold", "both"])
def test_eval_mask_picks_the_global_models_mask(eval_mask):
    """threshold: the forward keeps exactly the entries with θ > 0.5, on every draw."""
    population = tiny_population(2)
    fedpm = method(population, eval_mask=eval_mask)
    params, buffers = fedpm.global_model(population)
    variants = fedpm.global_variants(population)
    assert set(variants) == ({"threshold"} if eval_mask == "both" else set())
    fixed = variants["threshold"][0] if eval_mask == "both" else params
    score = population.params["0.weight_score"][0]
    if eval_mask == "sample":
        assert torch.equal(params["0.weight_score"], score)
        return
    x = torch.randn(5, 4)
    keep, keep_b = score > 0, population.params["0.bias_score"][0] > 0
    assert 0 < keep.float().mean() < 1
    expected = x @ (buffers["0.weight"] * keep).T + buffers["0.bias"] * keep_b
    layer = masked(nn.Sequential(nn.Linear(4, 3)))
    for _ in range(3):  # torch's generator: a different u each time, the same mask
        out = torch.func.functional_call(layer, ({**fixed, **buffers},), (x,))
        torch.testing.assert_close(out, expected)


# -- whole runs ---------------------------------------------------------------------------------

RUN = {
    "data": {"num_clients": 3, "transforms": "fedpm"},
    "model": {"name": "conv2_tiny"},
    "federation": {"rounds": 3, "participation": 0.67},
    "training": {
        "local_epochs": 1,
        "batch_size": 16,
        "optimizer": "adam",
        "lr": 0.1,
        "optimizer_state": "keep",
    },
    "eval": {"global": True},
}


def fedpm_spec(make_spec, method=None, **sections):
    merged = {**sections, **{k: {**v, **sections.get(k, {})} for k, v in RUN.items()}}
    return make_spec(method={"name": "fedpm", **(method or {})}, **merged)


def finished(resolved, path):
    session = RunSession.start(resolved, path)
    run(session.federation, on_round=[session.on_round])
    return session, session.finish()


def test_strategies_give_the_same_numbers(make_spec, tmp_path, one_thread):
    runs = {}
    for strategy in ("sequential", "vectorized"):
        spec = fedpm_spec(make_spec, engine={"strategy": strategy})
        runs[strategy], _ = finished(spec, tmp_path / strategy)
        assert runs[strategy].federation.strategy.name == strategy
    seq, vec = (strip_time(runs[s].run_dir.metrics()) for s in ("sequential", "vectorized"))
    for a, b in zip(seq, vec, strict=True):
        for key in ("acc_local_clients", "acc_agg_clients", "acc_global", "acc_global_threshold"):
            assert a[key] == b[key], key
        for key in ("bpp", "ones_fraction", "uplink_bits"):
            assert a[key] == b[key], key
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    pop_s = runs["sequential"].federation.population
    pop_v = runs["vectorized"].federation.population
    for name, tensor in pop_s.tensors().items():
        torch.testing.assert_close(pop_v.tensors()[name], tensor, rtol=1e-4, atol=1e-5)


def test_resume_is_bit_exact_and_frozen_weights_never_move(make_spec, tmp_path, one_thread):
    spec = fedpm_spec(
        make_spec,
        {"prior_reset_every": 2},
        output={"checkpoint_every": 1, "keep_checkpoints": 0},
    )
    full, full_summary = finished(spec, tmp_path / "full")
    broken = RunSession.start(spec, tmp_path / "broken")
    frozen = {n: t.clone() for n, t in broken.federation.population.buffers.items()}
    with pytest.raises(Crash):
        run(broken.federation, on_round=[broken.on_round, crash_after(1)])
    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2 and resumed.federation.method.alpha
    run(resumed.federation, on_round=[resumed.on_round])
    summary = resumed.finish()
    assert strip_time(resumed.run_dir.metrics()) == strip_time(full.run_dir.metrics())
    assert {k: v for k, v in summary.items() if k != "wall_seconds"} == {
        k: v for k, v in full_summary.items() if k != "wall_seconds"
    }
    pop = resumed.federation.population
    a, b = full.federation.population, pop
    assert all(torch.equal(a.tensors()[n], b.tensors()[n]) for n in a.tensors())
    for name, slots in a.optimizer.items():
        assert all(torch.equal(slots[s], b.optimizer[name][s]) for s in slots)
    assert all(torch.equal(pop.buffers[n], frozen[n]) for n in frozen)  # never trained
    assert set(pop.optimizer) == set(pop.params)  # Adam only on scores
    # uplink under 1 bit per score, counted over scores only (frozen weights are free)
    assert full_summary["parameters"] == full_summary["mask_entries"] == 93_034
    assert full_summary["uplink_bpp"] < 1.001


def test_compare_fingerprint_is_the_dense_model_fedavg_starts_from(make_spec, tmp_path):
    from fedlab_cli.engine.build import build_federation
    from fedlab_cli.engine.population import weights_sha256

    fedpm = build_federation(fedpm_spec(make_spec))
    fedavg = build_federation(fedpm_spec(make_spec, method={"name": "fedavg"}))
    assert fedpm.initial_sha256 == weights_sha256(fedavg.population)
    assert fedpm.initial_sha256 != weights_sha256(fedpm.population)


@pytest.mark.parametrize(
    "method, model, message",
    [
        ({"epsilon": 0.5}, "conv2_tiny", r"^method\.epsilon: Input should be less than 0\.5"),
        ({"prior_reset_every": 0}, "conv2_tiny", r"^method\.prior_reset_every: Input should be"),
        ({"eval_mask": "mean"}, "conv2_tiny", r"^method\.eval_mask: Input should be 'sample'"),
        ({}, "small_cnn", r"^model\.name: fedpm masks every conv .* 'features\.1\.weight' \(bn\)"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(make_spec, tmp_path, method, model, message):
    from fedlab_cli.engine.build import build_federation

    with pytest.raises(FedlabError, match=message):
        build_federation(fedpm_spec(make_spec, method, model={"name": model}))
