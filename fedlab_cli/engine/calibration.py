"""The round trip before round 0 (SSFL's saliency): clients compute, server combines.

``Calibration.weighted_mean(score, ...)`` has every listed client compute the cross-entropy
gradient of its current model on each of its first ``batches`` mini-batches — of a seeded
shuffle of its own training data, with its training transform — turn each into per-tensor
scores with ``score(grads, params)`` (``[k, ...]`` tensors), and average them over the batches;
the server receives the clients' scores and takes their weighted mean. Clients run in the
strategy's blocks (no per-client loop, memory-sized chunks), and only the running sum is kept,
so a million-parameter score of a hundred clients never sits in memory at once.

The shuffle draws from a generator of its own (seeded by the run seed), so calibrating leaves
the training draws exactly as they would be without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from fedlab_cli.engine.client_data import ClientData, groups_by_size
from fedlab_cli.engine.plan import batch_bounds, draw_plan
from fedlab_cli.engine.population import Population, to_device
from fedlab_cli.engine.trainer import CALIBRATE, LocalTrainer

Score = Callable[[dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]]
"""``score(grads, params) -> {name: [k, ...]}``: what a client sends for one mini-batch."""

CALIBRATION_SEED = 0xCA1
"""Mixed with the run seed: calibration's own shuffles."""


class Calibration:
    """What a method's ``calibrate`` hook may ask of the clients before training starts."""

    def __init__(
        self, trainer: LocalTrainer, population: Population, data: ClientData, seed: int
    ) -> None:
        self.trainer = trainer
        self.population = population
        self.data = data
        self.seed = seed

    def weighted_mean(
        self,
        score: Score,
        names: list[str],
        clients: list[int] | None = None,
        weights: Tensor | None = None,
        batches: int = 1,
        train: bool = False,
    ) -> dict[str, Tensor]:
        """Σ_c w_c · (1/I) Σ_b score(∇L_c,b, θ_c) / Σ_c w_c for the tensors ``names``.

        ``clients`` (default: every client) are client ids, ``weights`` (default: uniform) one
        per listed client; ``train`` runs the model in training mode (default: evaluation
        mode, as SSFL scores). With several processes each scores the listed clients it
        holds, and the sums meet in one reduction.
        """
        population = self.population
        listed = list(range(population.total_clients)) if clients is None else clients
        held = [i for i, c in enumerate(listed) if population.holds(c)]
        clients = [listed[i] for i in held]
        device = self.data.train_idx.device
        every_weight = (
            torch.ones(len(listed), dtype=torch.float64, device=device)
            if weights is None
            else weights.to(device=device, dtype=torch.float64)
        )
        w = every_weight[torch.tensor(held, dtype=torch.long, device=device)]
        generator = torch.Generator(device=device).manual_seed(self.seed * 7919 + CALIBRATION_SEED)
        batch_size = self.trainer.training.batch_size
        sizes = [self.data.train_sizes[c] for c in listed]  # every process draws for everyone
        epochs = max(math.ceil(batches / max(1, len(batch_bounds(n, batch_size)))) for n in sizes)
        plan = draw_plan(sizes, epochs, batch_size, self.data.train_transform, generator, device)
        in_plan = {c: i for i, c in enumerate(listed)}
        total = {n: torch.zeros_like(population.params[n][0], dtype=torch.float64) for n in names}
        self.trainer.precision.train(train)
        for group in groups_by_size(clients, self.data.train_sizes):
            for part in self.trainer.chunks.run(
                len(group),
                lambda lo, hi, g=group: self._block_sum(
                    score,
                    names,
                    [clients[p] for p in g[lo:hi]],
                    plan.rows([in_plan[clients[p]] for p in g[lo:hi]]),
                    w[torch.tensor(g[lo:hi], dtype=torch.long, device=device)],
                    batches,
                    batch_size,
                ),
            ):
                for n in names:
                    total[n] += part[n]
        summed = population.world.sum(torch.cat([t.flatten() for t in total.values()]))
        out, start = {}, 0
        for n, t in total.items():
            mean = summed[start : start + t.numel()].view_as(t) / every_weight.sum()
            out[n] = mean.to(population.params[n].dtype)
            start += t.numel()
        return out

    def _block_sum(self, score, names, members, plan, weights, batches, batch_size):
        population, data = self.population, self.data
        rows = population.index(members)
        params = {
            n: t.index_select(0, rows).requires_grad_(True) for n, t in population.params.items()
        }
        buffers = {n: t.index_select(0, rows) for n, t in population.buffers.items()}
        n = data.train_sizes[members[0]]
        own = data.train_idx.index_select(0, to_device(members, rows.device))[:, :n]
        bounds = batch_bounds(n, batch_size)
        keys = self.trainer.keys(members, own.device)
        forward = self.trainer.forward
        summed = {name: torch.zeros_like(params[name], dtype=torch.float64) for name in names}
        for b in range(batches):
            epoch, (lo, hi) = b // len(bounds), bounds[b % len(bounds)]
            batch = own.gather(1, plan.order[:, epoch, lo:hi])
            x = plan.augment(data.train_transform, data.dataset.train_images, batch, epoch, lo, hi)
            with self.trainer.noise(keys, CALIBRATE, b):
                logits = forward(params, buffers, x)
                loss = forward.losses(logits, data.dataset.train_labels[batch])
            found = torch.autograd.grad(loss.sum(), list(params.values()), allow_unused=True)
            grads = {
                k: torch.zeros_like(p) if g is None else g
                for (k, p), g in zip(params.items(), found, strict=True)
            }
            with torch.no_grad():
                values = score(grads, {k: p.detach() for k, p in params.items()})
                for name in names:
                    summed[name] += values[name].double()
        return {
            name: (s / batches * weights.view(-1, *[1] * (s.dim() - 1))).sum(0)
            for name, s in summed.items()
        }
