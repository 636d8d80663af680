"""LIPS (Xiao et al. 2025): FedBN plus transient, per-client sparsity of the middle layers.

For each round t = 0, ..., T-1 (REFERENCE.md §5.7, decisions 3-6):

1. every participant trains its model locally, densely (``sparsity: transient``);
2. the server averages conv/linear weights; BN and biases stay on the clients (FedBN);
3. if t mod ΔT == 0, each participant c keeps, of every middle conv/linear weight W (never the
   first or last layer, BN or biases), only the k = int(numel·d_t) entries of the fresh aggregate
   with the largest score S_c, where d_t = 1 - s_t and s_t = s0·(1 - t/T); the rest become 0
   (``reinit: zero``) or the initial global weights every client started from (``original``).

Scores: ``grad_x_global`` |g_c ⊙ W|, g_c = c's fp32 gradient on its last local mini-batch (the
reference code, default; ``score_precision: fp16`` keeps g_c as the official code stores it —
clipped to global norm 3.0 over all of c's tensors, then half precision — and ranks by a
descending sort as it does: bit-identical to that code, REFERENCE.md decision 4);
``update_x_local`` |Δθ_c ⊙ θ_c|, the local update times the local weights after training
(paper Eq. 3); ``magnitude`` |W| (one mask for all clients); ``random``.
``sparsity: persistent`` (Table 7) keeps each client's mask applied until the next
sparsification round: after every aggregation, and to weights and momentum after every local step.

Only the round's participants are sparsified (the reference has every client take part); the
others hold the dense aggregate. With A_fix (``freeze_middle_after``) frozen middle layers are
left as they are, so no sparsification happens from that round on.

Records. On each sparsification round ``metrics.jsonl`` gets ``sparsity`` (the target s_t),
``density_by_layer`` (per middle tensor, the share of entries the masks keep, mean over the
sparsified clients: k/numel), ``mask_jaccard_by_layer`` (per tensor, the mean over client pairs
i < j of |m_i ∧ m_j| / |m_i ∨ m_j|) and ``mask_jaccard`` (the unweighted mean of those over the
tensors). ``summary.json`` gets the ``s0`` used and, when persistent, ``mean_density`` and
``train_flops_rel`` (see ``TrainingCost``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from algorithms.fedbn import FedBN, FedBNParams
from fedlab_cli.engine.method import Block, LocalTrace, MethodParams, RunContext
from fedlab_cli.engine.optim import clip_grad_norms
from fedlab_cli.engine.population import Population
from fedlab_cli.models import Kind, Position, noise
from fedlab_cli.models.flops import layer_macs

RANDOM_SCORE_TAG = 0x1195
"""Names the noise streams of ``score: random`` (one per round and tensor)."""

REFERENCE_CLIP = 3.0
"""The official code's ``clip_grad_norm_`` bound on the stored gradient (fp16 scores only)."""

S0_BY_DATASET = {"cifar10": 0.5, "cifar100": 0.7, "tinyimagenet": 0.7}
"""The paper's s0 (Fig. 7d, README flags); other datasets (digits) take CIFAR-10's 0.5."""


class LIPSParams(FedBNParams):
    s0: float | None = Field(None, ge=0, lt=1, description="initial sparsity; default per dataset")
    interval: int = Field(5, ge=1, description="ΔT: sparsify at rounds t with t mod ΔT == 0")
    score: Literal["grad_x_global", "update_x_local", "magnitude", "random"] = "grad_x_global"
    reinit: Literal["zero", "original"] = "zero"
    sparsity: Literal["transient", "persistent"] = "transient"
    score_precision: Literal["fp32", "fp16"] = Field(
        "fp32", description="grad_x_global: fp16 = the official code's clipped half gradient"
    )


@dataclass(frozen=True)
class Schedule:
    """Which rounds sparsify, and how much: s_t = s0·(1 - t/T) at t mod ΔT == 0."""

    s0: float
    interval: int
    rounds: int

    def sparsifies(self, t: int) -> bool:
        return t % self.interval == 0 and self.density(t) < 1.0

    def sparsity(self, t: int) -> float:
        return self.s0 * (1 - t / self.rounds)

    def density(self, t: int) -> float:
        """d_t = d0 + (1 - d0)·t/T in the reference's float arithmetic (pipeline:71-75).

        d0 = 1 - s0 is taken in decimal, so for s0 = 0.7 it is the float 0.3 the reference is
        given; ``1 - 0.7`` or ``1 - s_t`` would make k smaller by one for some layers and rounds.
        """
        d0 = float(1 - Decimal(repr(self.s0)))
        return min(1.0, d0 + (1.0 - d0) * (t / self.rounds))

    def keep(self, numel: int, t: int) -> int:
        """k, the entries a sparsified tensor keeps."""
        return int(numel * self.density(t))


class LIPS(FedBN):
    Params: ClassVar[type[MethodParams]] = LIPSParams
    description: ClassVar[str] = (
        "LIPS: FedBN + transient per-client top-k sparsity of middle layers"
    )
    wants_last_gradients: ClassVar[bool] = True

    def setup(self, population: Population, context: RunContext) -> None:
        super().setup(population, context)
        self.population = population
        p = self.params
        s0 = p.s0 if p.s0 is not None else S0_BY_DATASET.get(context.protocol_dataset, 0.5)
        self.schedule = Schedule(s0, p.interval, context.rounds)
        self.persistent = p.sparsity == "persistent"
        self.middle = [
            name
            for name, role in population.roles.items()
            if name in population.params
            and role.position is Position.MIDDLE
            and role.kind is Kind.WEIGHT
        ]
        weights = population.params
        # decision 5: every client started from client 0's initial weights
        self.initial = {n: weights[n][0].clone() for n in self.middle}
        self.seed = context.seed
        # persistent only: each client's current mask [C, *shape] (client state the engine
        # slices for training blocks), and what training cost
        self.masks: dict[str, Tensor] = {}
        if self.persistent:
            self.masks = {
                n: population.add_state(
                    f"lips.mask.{n}", torch.ones_like(weights[n], dtype=torch.bool)
                )
                for n in self.middle
            }
            macs = layer_macs(context.architecture, context.image_shape)
            self.cost = TrainingCost(population, self.middle, macs)
        self.local_score: dict[str, Tensor] = {}
        self.sparsified: list[int] = []
        self.metrics: dict[str, Any] = {}

    def sparsifies(self, round_index: int) -> bool:
        return self.schedule.sparsifies(round_index) and not self.middle_frozen(round_index)

    # -- local training ----------------------------------------------------------------------

    def before_local_training(
        self, population: Population, clients: list[int], round_index: int
    ) -> None:
        self.metrics = {}
        if self.sparsifies(round_index) and self.params.score == "update_x_local":
            self.start = {n: population.params[n][clients].clone() for n in self.middle}

    def after_step(
        self, block: Block, params: dict[str, Tensor], optimizer_state: dict[str, dict]
    ) -> None:
        """Persistent: each client's mask stays on its weights and optimizer state."""
        if not self.persistent:
            return
        for name in self.middle:
            mask = block.state[f"lips.mask.{name}"]
            params[name].copy_(torch.where(mask, params[name], self.fill(name)))
            for slot in optimizer_state.get(name, {}).values():
                slot.mul_(mask)

    def after_local_training(
        self, population: Population, clients: list[int], round_index: int, trace: LocalTrace
    ) -> None:
        """Count persistent sparsity's training cost; keep each participant's local half of the
        score (the global half comes after sync)."""
        if self.persistent:
            self.cost.count(population.index(clients), trace.steps)
        if not self.sparsifies(round_index):
            return
        self.sparsified = list(trace.clients)
        if self.params.score == "grad_x_global":
            assert trace.last_grads is not None
            grads = trace.last_grads
            if self.params.score_precision == "fp16":
                grads = stored_like_reference(grads)
            self.local_score = {n: grads[n] for n in self.middle}
        elif self.params.score == "update_x_local":
            after = {n: population.params[n][clients] for n in self.middle}
            self.local_score = {n: ((after[n] - self.start[n]) * after[n]).abs() for n in after}
            del self.start

    # -- after aggregation -------------------------------------------------------------------

    def after_aggregate(self, population: Population, round_index: int) -> None:
        """Sparsify each participant's copy of the fresh aggregate (or re-apply masks)."""
        if self.sparsifies(round_index):
            self.sparsify(population, round_index)
        elif self.persistent and not self.middle_frozen(round_index):
            for name in self.middle:
                weight = population.params[name]
                weight.copy_(torch.where(self.masks[name], weight, self.fill(name)))

    def sparsify(self, population: Population, t: int) -> None:
        clients = population.index(self.sparsified)
        self.round = t
        density, overlap = {}, {}
        for name in self.middle:
            weight = population.params[name]
            w_glob = weight[clients]
            keep = self.schedule.keep(weight[0].numel(), t)
            mask = self.client_masks(name, w_glob, keep)
            weight[clients] = torch.where(mask, w_glob, self.fill(name))
            if self.persistent:  # non-participants hold the dense aggregate
                self.masks[name].fill_(True)
                self.masks[name][clients] = mask
            flat = population.gather_participants(mask.flatten(1), clients)  # every process's
            density[name] = flat.float().mean(1).mean()
            overlap[name] = mean_pairwise_jaccard(flat)
        self.local_score = {}
        if self.persistent:
            self.cost.update(self.masks)
        jaccard = [v for v in overlap.values() if v is not None]
        self.metrics = {
            "sparsity": self.schedule.sparsity(t),
            "density_by_layer": density,
            "mask_jaccard": torch.stack(jaccard).mean() if jaccard else None,
            "mask_jaccard_by_layer": overlap,
        }

    def client_masks(self, name: str, w_glob: Tensor, keep: int) -> Tensor:
        """[k, *shape] bool: the top-``keep`` entries of each participant's score."""
        score = self.params.score
        if score == "magnitude":  # the same |W| for everyone: one mask, shared
            glob = self.population.params[name][:1]  # every client holds the aggregate
            return top_k_mask(glob.abs().flatten(1), keep).expand(len(w_glob), -1).view_as(w_glob)
        if score == "random":  # each client's own stream: the same wherever it is trained
            values = random_scores(self.seed, self.sparsified, name, self.round, w_glob)
        elif score == "grad_x_global":
            values = (self.local_score[name] * w_glob).abs()
            if self.params.score_precision == "fp16":
                return descending_sort_mask(values.flatten(1), keep).view_as(w_glob)
        else:
            values = self.local_score[name]
        return top_k_mask(values.flatten(1), keep).view_as(w_glob)

    def fill(self, name: str) -> Tensor | float:
        """What a pruned entry becomes (decision 5)."""
        return self.initial[name] if self.params.reinit == "original" else 0.0

    # -- records -----------------------------------------------------------------------------

    def round_metrics(self) -> dict[str, Any]:
        return self.metrics

    def summary_metrics(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"s0": self.schedule.s0}
        if self.persistent:
            summary.update(self.cost.summary())
        return summary

    def load_state_dict(self, state: dict) -> None:
        """Masks and cost sums come back with the population (client state)."""
        if self.persistent:
            self.cost.update(self.masks)


def random_scores(seed: int, clients: list[int], name: str, t: int, like: Tensor) -> Tensor:
    """``[k, *shape]`` uniform scores, from each client's own noise stream (named by the round
    and the tensor), so a client's random mask does not depend on where it is trained."""
    keys = torch.tensor([noise.client_key(seed, c) for c in clients], dtype=torch.long)
    tag = noise.mix64(RANDOM_SCORE_TAG, t, *name.encode())
    with noise.stream(keys.to(like.device), tag):
        return noise.uniform(like.shape[1:], like.device)


def top_k_mask(scores: Tensor, keep: int) -> Tensor:
    """[C, numel] bool, True at each row's ``keep`` largest scores (one topk for all clients)."""
    index = scores.topk(keep, dim=1, sorted=False).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, index, True)


def stored_like_reference(grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each client's last-batch gradients as the official code keeps them: scaled by
    ``clip_grad_norm_(all tensors, 3.0)``'s coefficient, then cast to half precision."""
    clipped = {n: g.clone() for n, g in grads.items()}
    clip_grad_norms(clipped, REFERENCE_CLIP)
    return {n: g.half() for n, g in clipped.items()}


def descending_sort_mask(scores: Tensor, keep: int) -> Tensor:
    """As ``top_k_mask``, but breaking ties as the reference does: the first ``keep`` indices of
    a descending ``torch.sort`` (half-precision scores tie often, and topk orders ties apart)."""
    index = torch.sort(scores, dim=1, descending=True).indices[:, :keep]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, index, True)


def mean_pairwise_jaccard(masks: Tensor) -> Tensor | None:
    """Mean over client pairs i < j of |m_i ∧ m_j| / |m_i ∨ m_j|; None for fewer than 2 clients.

    The [C, C] intersections are one float32 matmul of 0/1 rows: exact for numel < 2^24.
    """
    count = masks.shape[0]
    if count < 2:
        return None
    m = masks.float()
    inter = m @ m.T
    sizes = m.sum(1)
    union = (sizes[:, None] + sizes[None, :] - inter).clamp_min(1)
    i, j = torch.triu_indices(count, count, offset=1, device=masks.device)
    return (inter[i, j] / union[i, j]).mean()


class TrainingCost:
    """Persistent sparsity's mean density and training FLOPs relative to dense, per local step.

    A local step costs about 3x a forward pass (forward, input gradient, weight gradient), and a
    conv/linear layer's MACs scale with the density of its weight, so the step of a client with
    per-layer densities d_l costs Σ_l MACs_l·d_l / Σ_l MACs_l of a dense step (first and last
    layers at d = 1; BN, ReLU and pooling ignored). ``train_flops_rel`` is that ratio averaged
    over every local step of every client in every round (round 0 trains dense);
    ``mean_density`` is the share of the sparsified layers' weights kept, averaged the same way.
    With ``reinit: original`` pruned entries hold fixed non-zero values: the mask density is
    counted all the same. The sums are per-client state (they travel with their clients).
    """

    def __init__(self, population: Population, middle: list[str], macs: dict[str, int]) -> None:
        device = population.device
        as_vector = partial(torch.tensor, dtype=torch.float64, device=device)
        self.population = population
        self.middle = middle
        self.numel = as_vector([population.params[n][0].numel() for n in middle])
        layers = [population.roles[n].layer for n in middle]
        self.macs = as_vector([macs[layer] for layer in layers])  # the sparsified layers'
        self.other_macs = float(sum(macs.values()) - sum(macs[layer] for layer in layers))
        self.densities = torch.ones(population.num_clients, len(middle), device=device)
        self.densities = self.densities.to(torch.float64)
        zeros = partial(torch.zeros, population.num_clients, dtype=torch.float64, device=device)
        self.steps = population.add_state("lips.cost.steps", zeros())
        self.density_sum = population.add_state("lips.cost.density_sum", zeros())
        self.flops_sum = population.add_state("lips.cost.flops_sum", zeros())

    def update(self, masks: dict[str, Tensor]) -> None:
        """Each client's per-layer density under its current masks."""
        per_layer = [masks[n].flatten(1).sum(1).to(torch.float64) for n in self.middle]
        self.densities = torch.stack(per_layer, dim=1) / self.numel

    def count(self, clients: Tensor, steps: list[int]) -> None:
        """Add the local steps of a round's participants (``steps[i]`` for ``clients[i]``),
        each at its client's current densities."""
        d = self.densities[clients]  # [k, layers]
        weight = torch.tensor(steps, dtype=torch.float64).to(d.device)
        dense = self.other_macs + self.macs.sum()
        self.steps[clients] += weight
        self.density_sum[clients] += weight * (d * self.numel).sum(1) / self.numel.sum()
        self.flops_sum[clients] += weight * (self.other_macs + (d * self.macs).sum(1)) / dense

    def summary(self) -> dict[str, float | None]:
        world = self.population.world
        steps = float(world.sum(self.steps.sum()))
        if steps == 0 or not self.middle:
            return {"mean_density": None, "train_flops_rel": None}
        return {
            "mean_density": float(world.sum(self.density_sum.sum())) / steps,
            "train_flops_rel": float(world.sum(self.flops_sum.sum())) / steps,
        }
