"""FedCAC (Wu et al. 2023): critical parameters from similar clients, the rest from everyone.

After local training every client marks, per parameter tensor, its *critical* entries: the top
τ share by ``|Δθ ⊙ θ_after|``. The server measures how much the clients' critical sets overlap,
lets each client collaborate only with clients above a threshold that rises every round, and
syncs each client as: critical entries ← the uniform average of its collaborators' models,
the rest ← the FedAvg global model. BN running statistics are not synced: they stay local.
Once ``(r+1) ≥ β`` a client collaborates with itself alone, so its critical entries stay local.
(REFERENCE.md §5.6, decision 9.)

With partial participation, overlaps, collaborators and sync involve only the round's
participants; a client that did not train keeps its model unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from fedlab_cli.engine.method import (
    FLOAT_BITS,
    LocalTrace,
    Method,
    MethodParams,
    RunContext,
    Traffic,
)
from fedlab_cli.engine.population import Population

DATASET_DEFAULTS: dict[str, tuple[float, int]] = {
    "cifar10": (0.5, 100),
    "cifar100": (0.4, 170),
    "tinyimagenet": (0.4, 170),
}
"""(τ, β) per dataset (decision 9); any other dataset (digits) gets the CIFAR-10 values."""

TINY_THRESHOLD = 1e-10
"""A threshold at or below this is "zero": the smallest score above ``POSITIVE`` replaces it."""
POSITIVE = 1e-20


class FedCACParams(MethodParams):
    tau: float | None = Field(
        None, gt=0, le=1, description="share of each tensor that is critical (unset: per dataset)"
    )
    beta: int | None = Field(
        None, ge=1, description="rounds until collaboration ends (unset: per dataset)"
    )


def critical_masks(after: Tensor, before: Tensor, tau: float) -> Tensor:
    """Per client (dim 0), the entries of one tensor whose ``|Δθ ⊙ θ_after|`` is in its top τ.

    The threshold is the ⌊τ·numel⌋-th largest score; when it is ≤ 1e-10 the smallest score above
    1e-20 replaces it (if there is none, the threshold stays). ⌊τ·numel⌋ = 0 makes the
    threshold +∞: no entry of that tensor is critical. Ties at the threshold are all critical.
    """
    k = after.shape[0]
    score = ((after - before) * after).abs().reshape(k, -1)
    count = int(tau * score.shape[1])
    if count == 0:
        return torch.zeros_like(after, dtype=torch.bool)
    thresh = score.topk(count, dim=1).values[:, -1]
    smallest_positive = torch.where(score > POSITIVE, score, torch.inf).amin(dim=1)
    use_positive = (thresh <= TINY_THRESHOLD) & torch.isfinite(smallest_positive)
    thresh = torch.where(use_positive, smallest_positive, thresh)
    return (score >= thresh[:, None]).view_as(after)


def overlap_matrix(masks: dict[str, Tensor]) -> Tensor:
    """``o_ij = 1 − Σ|c_i − c_j| / (2·Σ c_i)`` over all tensors' binary critical masks, ``[k, k]``.

    For binary masks ``Σ|c_i − c_j| = n_i + n_j − 2·c_i·c_j``, so one Gram matrix per tensor
    gives every pair at once (0/1 products summed in fp32 are exact below 2^24 entries per
    tensor; totals accumulate in fp64). A client with no critical entry divides by 1, not 0.
    """
    first = next(iter(masks.values()))
    k = first.shape[0]
    counts = torch.zeros(k, dtype=torch.float64, device=first.device)
    common = torch.zeros(k, k, dtype=torch.float64, device=first.device)
    for mask in masks.values():
        flat = mask.reshape(k, -1).to(torch.float32)
        counts += flat.sum(dim=1, dtype=torch.float64)
        common += (flat @ flat.T).double()
    differ = counts[:, None] + counts[None, :] - 2 * common
    return 1 - differ / (2 * counts[:, None]).clamp_min(1)


def collaborators(overlap: Tensor, round_index: int, beta: int) -> Tensor:
    """``[k, k]`` bool: i works with itself and every j with ``o_ij ≥ thr``.

    ``thr = mean(o) + (r+1)/β·(max(o) − mean(o))`` over the off-diagonal overlaps (as Fling's
    FedCAC computes them). From ``(r+1) ≥ β`` on, thr ≥ max(o): no one but i itself.
    """
    k = overlap.shape[0]
    alone = torch.eye(k, dtype=torch.bool, device=overlap.device)
    if k == 1 or round_index + 1 >= beta:
        return alone
    others = overlap[~alone]
    mean = others.mean()
    thr = mean + (round_index + 1) / beta * (others.max() - mean)
    return alone | (overlap >= thr)


class FedCAC(Method):
    Params: ClassVar[type[MethodParams]] = FedCACParams
    description: ClassVar[str] = "FedCAC: critical params from similar clients, the rest global"
    has_global_model: ClassVar[bool] = False

    def setup(self, population: Population, context: RunContext) -> None:
        """Resolve τ and β: the user's values, else the dataset's defaults (decision 9)."""
        super().setup(population, context)
        tau, beta = DATASET_DEFAULTS.get(context.protocol_dataset, DATASET_DEFAULTS["cifar10"])
        self.tau = self.params.tau if self.params.tau is not None else tau
        self.beta = self.params.beta if self.params.beta is not None else beta
        self.start: dict[str, Tensor] = {}
        self.critical: dict[str, Tensor] = {}
        self.metrics: dict[str, Any] = {}

    def before_local_training(
        self, population: Population, clients: list[int], round_index: int
    ) -> None:
        idx = population.index(clients)
        self.start = {n: p[idx].clone() for n, p in population.params.items()}

    def after_local_training(
        self, population: Population, clients: list[int], round_index: int, trace: LocalTrace
    ) -> None:
        """Each participant's critical entries of every parameter (BN affine and biases too)."""
        idx = population.index(clients)
        self.critical = {
            n: critical_masks(p[idx], self.start.pop(n), self.tau)
            for n, p in population.params.items()
        }

    def aggregate(
        self, population: Population, participants: Tensor, weights: Tensor, round_index: int
    ) -> None:
        """Critical entries ← collaborators' average; the others ← the FedAvg global model.

        Overlaps and collaborators involve every participant, wherever it is held: the masks and
        models of the other processes' participants are gathered (in client-id order)."""
        counts = population.participant_counts(participants)
        everyone = {n: population.world.gather(m, counts) for n, m in self.critical.items()}
        overlap = overlap_matrix(everyone)
        works_with = collaborators(overlap, round_index, self.beta)
        mixing = works_with.to(torch.float64)
        mixing /= mixing.sum(dim=1, keepdim=True)
        start = sum(counts[: population.world.rank])
        mine = slice(start, start + len(participants))  # the rows of the participants here
        whole = not population.world.distributed or population.world.deterministic
        globs = population.mean_over(list(population.params), participants, weights)
        for name, stacked in population.params.items():
            own = stacked[participants]
            models = population.world.gather(own, counts).reshape(len(mixing), -1).double()
            glob = globs[name].expand_as(own)
            # fp64: a weight average must not go through TF32 tensor cores on CUDA; the whole
            # product, then this process's rows, is one process's arithmetic exactly
            mixed = (mixing @ models)[mine] if whole else mixing[mine] @ models
            customized = mixed.to(own.dtype).view_as(own)
            stacked[participants] = torch.where(self.critical[name], customized, glob)
        self.metrics = {
            "collaborators": works_with.sum(dim=1).double().mean(),
            "critical_share": _share(everyone),
        }
        self.critical = {}

    def communication(
        self, population: Population, clients: list[int], round_index: int
    ) -> Traffic:
        """Each participant sends its parameters and receives its customized ones (32-bit);
        BN statistics stay local."""
        per_client = FLOAT_BITS * sum(t[0].numel() for t in population.params.values())
        total = float(per_client * len(clients))
        return Traffic(total, total)

    def round_metrics(self) -> dict[str, Any]:
        """Mean collaborator count (self included) and share of critical entries this round."""
        return {f"fedcac_{key}": value for key, value in self.metrics.items()}


def _share(masks: dict[str, Tensor]) -> Tensor:
    total = sum(m.numel() for m in masks.values())
    return torch.stack([m.sum() for m in masks.values()]).sum().double() / total
