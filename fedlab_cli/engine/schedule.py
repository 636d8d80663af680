"""Learning-rate schedules: one lr per round (or per local epoch) for every client.

- ``constant``: lr.
- ``exponential``: lr·γ^t (SSFL's CIFAR-10 profile: γ = 0.998).
- ``cosine_restarts``: cosine annealing with warm restarts every ``cycle`` steps of t, as
  ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=cycle)`` evaluated at t:
  η_min + (lr − η_min)·(1 + cos(π·(t mod cycle)/cycle))/2.

``unit`` says what t counts. ``round`` (default): t is the round, the lr is constant within a
round. ``epoch``: t is the local epoch within the round (0, 1, ... across all of a round's
phases) and restarts at 0 every round — what SSFL's code does, since it builds a fresh
scheduler in every local training and steps it after each epoch (riohib/SSFL@83fc11d,
``api/trainers/model_trainer.py``).
"""

from __future__ import annotations

import math

from fedlab_cli.spec.model import TrainingSpec


def round_lr(training: TrainingSpec, round_index: int, epoch: int = 0) -> float:
    """The learning rate of local epoch ``epoch`` of round ``round_index`` (both 0-based)."""
    schedule, lr = training.lr_schedule, training.lr
    t = epoch if schedule.unit == "epoch" else round_index
    if schedule.name == "exponential":
        return lr * schedule.gamma**t
    if schedule.name == "cosine_restarts":
        phase = (t % schedule.cycle) / schedule.cycle
        return schedule.eta_min + (lr - schedule.eta_min) * (1 + math.cos(math.pi * phase)) / 2
    return lr
