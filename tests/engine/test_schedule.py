"""Learning rate per round, against hand computations and torch's own scheduler."""

import math

import pytest
import torch

from fedlab_cli.engine.schedule import round_lr
from fedlab_cli.spec.model import TrainingSpec


def training(**schedule):
    return TrainingSpec(lr=0.1, lr_schedule=schedule)


def test_constant_is_the_lr():
    assert [round_lr(training(), t) for t in (0, 1, 500)] == [0.1, 0.1, 0.1]


def test_exponential_is_lr_times_gamma_to_the_round():
    spec = training(name="exponential", gamma=0.998)
    assert round_lr(spec, 0) == 0.1
    assert round_lr(spec, 1) == pytest.approx(0.0998, rel=1e-15)
    assert round_lr(spec, 3) == pytest.approx(0.1 * 0.998 * 0.998 * 0.998, rel=1e-14)
    assert round_lr(spec, 998) == pytest.approx(0.1 * math.exp(998 * math.log(0.998)), rel=1e-12)


def test_cosine_restarts_by_hand():
    spec = training(name="cosine_restarts", cycle=4, eta_min=1e-5)
    by_hand = [1e-5 + (0.1 - 1e-5) * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert [round_lr(spec, t) for t in range(8)] == pytest.approx(by_hand * 2, rel=1e-14)
    assert round_lr(spec, 4) == 0.1  # a restart


def test_cosine_restarts_equals_torch_scheduler():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, 10, eta_min=1e-5)
    spec = training(name="cosine_restarts", cycle=10, eta_min=1e-5)
    for t in range(25):
        assert round_lr(spec, t) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        optimizer.step()
        scheduler.step()


def test_epoch_unit_is_a_fresh_torch_scheduler_every_round_stepped_each_epoch():
    """SSFL's code builds CosineAnnealingWarmRestarts(T_0=10, eta_min=1e-5) anew in every local
    training and steps it after each of the E epochs: the lr depends on the epoch alone."""
    spec = TrainingSpec(
        lr=0.1,
        lr_schedule={"name": "cosine_restarts", "cycle": 10, "eta_min": 1e-5, "unit": "epoch"},
    )
    for round_index in (0, 1, 7):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=0.1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, 10, eta_min=1e-5
        )
        for epoch in range(12):
            expected = optimizer.param_groups[0]["lr"]
            assert round_lr(spec, round_index, epoch) == pytest.approx(expected, rel=1e-12)
            optimizer.step()
            scheduler.step()


def test_round_unit_ignores_the_epoch():
    spec = training(name="exponential", gamma=0.5)
    assert [round_lr(spec, 2, e) for e in range(3)] == [0.025] * 3
