"""Counter-based noise: one client's numbers are the same alone or batched, and well spread."""

import math

import pytest
import torch
from torch.func import vmap

from fedlab_cli.models import noise

KEYS = torch.tensor([noise.client_key(0, c) for c in range(4)])


def batched_draw(keys, tag, shape):
    def one(key):
        with noise.substream(key):
            return noise.uniform(shape, "cpu")

    with noise.stream(keys, tag):
        return vmap(one)(keys)


def plain_draw(key, tag, shape):
    with noise.stream(key.view(1), tag) as s, noise.substream(s.keys[0]):
        return noise.uniform(shape, "cpu")


def test_a_client_draws_the_same_alone_and_batched():
    together = batched_draw(KEYS, 7, (3, 5))
    for c in range(4):
        assert torch.equal(plain_draw(KEYS[c], 7, (3, 5)), together[c])
    assert together.shape == (4, 3, 5)


def test_values_depend_on_client_tag_call_and_position_only():
    a = batched_draw(KEYS, 7, (1000,))
    assert torch.equal(a, batched_draw(KEYS, 7, (1000,)))  # deterministic
    assert not torch.equal(a, batched_draw(KEYS, 8, (1000,)))  # another pass
    assert not torch.equal(a[0], a[1])  # another client
    with noise.stream(KEYS[:1], 7) as s, noise.substream(s.keys[0]):
        first, second = noise.uniform((1000,), "cpu"), noise.uniform((1000,), "cpu")
    assert torch.equal(first, a[0]) and not torch.equal(first, second)  # next call, new values
    # a prefix of positions is the same whatever the shape asked for
    assert torch.equal(batched_draw(KEYS, 7, (10,)), a[:, :10])


def test_values_are_uniform_in_zero_one():
    u = batched_draw(KEYS, 1, (50_000,)).flatten()
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert u.var().item() == pytest.approx(1 / 12, abs=0.002)
    # Kolmogorov-Smirnov distance to U(0, 1); the 99.9% critical value is 1.95/sqrt(n)
    sorted_u = torch.sort(u.double()).values
    n = len(sorted_u)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float((grid - sorted_u).abs().max()) < 1.95 / math.sqrt(n)
    # neighbouring positions are uncorrelated
    corr = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]
    assert abs(float(corr)) < 0.01


def test_outside_a_stream_torch_global_generator_is_used():
    torch.manual_seed(3)
    expected = torch.rand(6)
    torch.manual_seed(3)
    assert torch.equal(noise.uniform((6,), "cpu"), expected)


def finalise(z: int) -> int:
    """SplitMix64's output function, written out (Steele, Lea, Flood 2014)."""
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_host_hash_chains_splitmix64():
    """SplitMix64's first output for seed 0 is 0xE220A8397B1DCDAF; more words chain it."""
    m, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15
    assert noise.mix64(0) & m == 0xE220A8397B1DCDAF
    first = finalise((golden + 5) & m)
    assert noise.mix64(5, 9) & m == finalise((first + golden + 9) & m)
