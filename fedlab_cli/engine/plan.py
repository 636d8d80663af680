"""A round's random draws, made up front in one fixed order: the RNG contract of local training.

Before a round trains, every random number it needs from the run's generator is drawn, in this
order: participant by participant (in ``clients`` order), epoch by epoch — the epoch's
permutation of the client's samples (``randperm(n)``), then for each mini-batch of that
permutation the augmentation's per-sample draws in the pipeline's own order (flips, angles,
crop offsets). Nothing else touches the generator during training (stochastic layers draw from
counter-based streams, ``fedlab_cli.models.noise``), so any grouping of clients into blocks —
one at a time, or many batched — sees the same batches and the same augmentation, and the
generator ends in the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fedlab_cli.data.augment import Pipeline


@dataclass
class Plan:
    """Per participant: ``orders[i]`` is ``[epochs, n_i]``, each epoch's permutation;
    ``draws[i][j]`` is ``[epochs, n_i]``, the pipeline's j-th per-sample draw at each position
    of that epoch's order."""

    orders: list[Tensor]
    draws: list[list[Tensor]]

    def rows(self, positions: list[int]) -> BlockPlan:
        """The plan of the participants at these positions (all of one size), stacked."""
        kinds = len(self.draws[positions[0]]) if positions else 0
        return BlockPlan(
            order=torch.stack([self.orders[i] for i in positions]),
            draws=[torch.stack([self.draws[i][j] for i in positions]) for j in range(kinds)],
        )


@dataclass
class BlockPlan:
    """A block's draws: ``order`` ``[k, epochs, n]``, each of ``draws`` ``[k, epochs, n]``."""

    order: Tensor
    draws: list[Tensor]

    def augment(
        self, pipeline: Pipeline, images: Tensor, batch: Tensor, epoch: int, lo: int, hi: int
    ) -> Tensor:
        """The block's augmented batch ``[k, b, C, H, W]`` for positions ``lo:hi`` of ``epoch``."""
        draws = [d[:, epoch, lo:hi].flatten() for d in self.draws]
        x = pipeline.apply(images[batch.flatten()], draws)
        return x.view(*batch.shape, *x.shape[1:])


def draw_plan(
    sizes: list[int],
    epochs: int,
    batch_size: int,
    pipeline: Pipeline,
    generator: torch.Generator,
    device: torch.device,
) -> Plan:
    """Every draw of a round for participants with these sample counts, in the contract's order."""
    orders: list[Tensor] = []
    draws: list[list[Tensor]] = []
    for n in sizes:
        per_epoch_order, per_epoch_draws = [], []
        for _ in range(epochs):
            per_epoch_order.append(torch.randperm(n, generator=generator, device=device))
            per_batch = [
                pipeline.draw(hi - lo, generator, device) for lo, hi in batch_bounds(n, batch_size)
            ]
            per_epoch_draws.append([torch.cat(kind) for kind in zip(*per_batch, strict=True)])
        kinds = len(per_epoch_draws[0]) if per_epoch_draws else 0
        orders.append(
            torch.stack(per_epoch_order)
            if per_epoch_order
            else torch.zeros(0, n, dtype=torch.long, device=device)
        )
        draws.append([torch.stack([d[j] for d in per_epoch_draws]) for j in range(kinds)])
    return Plan(orders, draws)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each mini-batch of an epoch, as ``Tensor.split(batch_size)`` cuts it."""
    return [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]
