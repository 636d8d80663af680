"""Learning-rate schedules over communication rounds (one lr per round for every client).

- ``constant``: lr.
- ``exponential``: lr·γ^t (SSFL's CIFAR-10 profile: γ = 0.998).
- ``cosine_restarts``: cosine annealing with warm restarts every ``cycle`` rounds, as
  ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=cycle)`` evaluated at round t:
  η_min + (lr − η_min)·(1 + cos(π·(t mod cycle)/cycle))/2.
"""

from __future__ import annotations

import math

from fedlab_cli.spec.model import TrainingSpec


def round_lr(training: TrainingSpec, round_index: int) -> float:
    """The learning rate of round ``round_index`` (0-based)."""
    schedule, lr = training.lr_schedule, training.lr
    if schedule.name == "exponential":
        return lr * schedule.gamma**round_index
    if schedule.name == "cosine_restarts":
        phase = (round_index % schedule.cycle) / schedule.cycle
        return schedule.eta_min + (lr - schedule.eta_min) * (1 + math.cos(math.pi * phase)) / 2
    return lr
