"""SSFL (Ohib et al., "Unmasking Efficiency: Learning Salient Sparse Models in Non-IID FL").

One global sparse subnetwork, found once from the clients' saliency, then FedAvg inside it, as
riohib/SSFL@83fc11d runs it (docs/SPARSE_FL.md §1):

    prunable: every conv and linear weight (stem, shortcuts, classifier); never a bias or norm
    1. every client c (not only the sampled ones), at the global weights, model in eval mode:
         s_c = (1/I) Σ_{b < I} |∂CE_b/∂w ⊙ w|      on its first I shuffled mini-batches
    2. server: s = Σ_c p_c·s_c / Σ_c p_c            (p_c = n_c, or 1: the official code)
         m = [s ≥ the ⌊n·d⌋-th largest s over all prunable weights]   (one threshold, ties kept)
         w ← w ⊙ m
    3. every round: local training with m held (gradients masked before clipping, weights and
       optimizer state re-masked after every step, so pruned entries stay exactly 0 whatever the
       optimizer); w ← m ⊙ FedAvg(every tensor). m never changes.

Step 1-2 run before round 0, or after ``warmup_rounds`` dense FedAvg rounds, at the start of
round ``warmup_rounds`` (the official ``warmup_rounds: W`` trains W − 1 dense rounds, since its
round 0 trains nothing: ``W − 1`` here is the same run).

Communication: a participant uploads the kept values of the masked tensors and every other
shared tensor dense (both sides know the mask, so no index travels), 32 bits each, and downloads
the same. Once: every client uploads its dense float scores (32 bits per prunable weight), and
the server broadcasts the mask at 1 bit per prunable weight (``one_time`` in the summary gives
its entropy-coded size n·H(d) beside it); after a warm-up it also broadcasts the dense global
weights the clients score at. A broadcast is counted once (SPARSE_FL.md §1.4).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from fedlab_cli.engine.calibration import Calibration, Score
from fedlab_cli.engine.method import (
    FLOAT_BITS,
    Block,
    Method,
    MethodParams,
    RunContext,
    Traffic,
    binary_entropy,
)
from fedlab_cli.engine.population import Population
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind


class SSFLParams(MethodParams):
    density: float = Field(0.5, gt=0, le=1, description="d: share of prunable weights kept")
    score_batches: int = Field(1, ge=1, description="I: mini-batches each client scores on")
    score_weighting: Literal["uniform", "samples"] = Field(
        "samples", description="p_c: 1 (the official code) or the client's sample count"
    )
    warmup_rounds: int = Field(0, ge=0, description="dense rounds before the mask is found")


def saliency(names: list[str]) -> Score:
    """|∂L/∂w ⊙ w| of each prunable weight: what a client sends for one mini-batch."""
    return lambda grads, params: {n: (grads[n] * params[n]).abs() for n in names}


def global_top_k(scores: dict[str, Tensor], density: float) -> dict[str, Tensor]:
    """Keep every score ≥ the ⌊n·d⌋-th largest over all tensors at once (ties at it kept)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = math.floor(flat.numel() * density)
    threshold = flat.kthvalue(flat.numel() - keep + 1).values
    return {n: s >= threshold for n, s in scores.items()}


def check(params: SSFLParams, prunable: int, rounds: int) -> None:
    """Values each valid alone that cannot run together with this model or protocol."""
    if math.floor(prunable * params.density) == 0:
        raise FedlabError(
            f"method.density: keeps no weight of the model's {prunable} prunable ones "
            f"(got {params.density})"
        )
    if params.warmup_rounds >= rounds:
        raise FedlabError(
            f"method.warmup_rounds: must be below federation.rounds ({rounds}), or no round "
            f"trains sparse (got {params.warmup_rounds})"
        )


class SSFL(Method):
    Params: ClassVar[type[MethodParams]] = SSFLParams
    description: ClassVar[str] = "SSFL: one global saliency mask before training, FedAvg inside"

    def setup(self, population: Population, context: RunContext) -> None:
        super().setup(population, context)
        roles, tensors = population.roles, population.tensors()
        self.prunable = [n for n in population.params if roles[n].kind is Kind.WEIGHT]
        self.numel = {n: tensors[n][0].numel() for n in self.prunable}
        self.dense = sum(tensors[n][0].numel() for n in self.shared_names(population))
        self.num_clients = population.total_clients
        check(self.params, sum(self.numel.values()), context.rounds)
        self.mask: dict[str, Tensor] = {}  # bool, one per prunable weight; empty until found
        self.kept: dict[str, int] | None = None  # host counts, read once after the mask is found

    def attach_calibration(self, calibration: Calibration) -> None:
        self.calibration = calibration

    def calibrate(self, population: Population, calibration: Calibration) -> None:
        if self.params.warmup_rounds == 0:
            self.find_mask(population)

    def before_local_training(
        self, population: Population, clients: list[int], round_index: int
    ) -> None:
        if not self.mask and round_index == self.params.warmup_rounds:
            self.find_mask(population)

    def find_mask(self, population: Population) -> None:
        """Steps 1-2: the combined saliency's global top-k, multiplied into every client."""
        self.mask = global_top_k(self.combined_scores(), self.params.density)
        self.kept = None
        for name, mask in self.mask.items():
            population.params[name].mul_(mask)

    def combined_scores(self) -> dict[str, Tensor]:
        """Step 1: Σ_c p_c·s_c / Σ_c p_c, each client scoring at the weights it holds."""
        counts = self.calibration.data.train_counts
        weights = counts if self.params.score_weighting == "samples" else None
        return self.calibration.weighted_mean(
            saliency(self.prunable),
            self.prunable,
            weights=weights,
            batches=self.params.score_batches,
        )

    # -- local training: the mask is held --------------------------------------------------------

    def transform_gradients(
        self, block: Block, params: dict[str, Tensor], grads: dict[str, Tensor]
    ) -> None:
        for name, mask in self.mask.items():
            if name in grads:
                grads[name].mul_(mask)

    def after_step(
        self, block: Block, params: dict[str, Tensor], optimizer_state: dict[str, dict]
    ) -> None:
        for name, mask in self.mask.items():
            params[name].mul_(mask)
            for slot in optimizer_state.get(name, {}).values():
                slot.mul_(mask)

    # -- server ------------------------------------------------------------------------------

    def aggregate(
        self, population: Population, participants: Tensor, weights: Tensor, round_index: int
    ) -> None:
        """FedAvg of every shared tensor, then the mask re-applied to what every client holds."""
        super().aggregate(population, participants, weights, round_index)
        for name, mask in self.mask.items():
            population.params[name].mul_(mask)

    # -- communication and records -----------------------------------------------------------

    def kept_counts(self) -> dict[str, int]:
        """Kept entries per prunable tensor (one host read per run, after the mask is found)."""
        if self.kept is None:
            self.kept = {n: int(m.sum()) for n, m in self.mask.items()}
        return self.kept

    def communication(
        self, population: Population, clients: list[int], round_index: int
    ) -> Traffic:
        """Kept values of the masked tensors plus every other shared tensor, 32-bit, each way."""
        if not self.mask:
            return super().communication(population, clients, round_index)
        tensors = population.tensors()
        names = self.shared_names(population)
        other = sum(tensors[n][0].numel() for n in names if n not in self.mask)
        total = float(FLOAT_BITS * (sum(self.kept_counts().values()) + other) * len(clients))
        return Traffic(total, total)

    def one_time(self) -> dict[str, float]:
        """The discovery round trip: every client's float scores up, one mask broadcast down
        (after a warm-up, also one broadcast of the global weights the clients score at)."""
        n = sum(self.numel.values())
        density = sum(self.kept_counts().values()) / n
        bits = {  # a broadcast is counted once
            "score_uplink_bits": float(FLOAT_BITS * n * self.num_clients),
            "mask_broadcast_bits": float(n),
            "mask_broadcast_entropy_bits": n * binary_entropy(density),
        }
        if self.params.warmup_rounds:
            bits["model_broadcast_bits"] = float(FLOAT_BITS * self.dense)
        return bits

    def one_time_bits(self) -> float:
        """Sent as they are: the mask at 1 bit per prunable weight, not entropy-coded."""
        bits = self.one_time()
        return sum(v for k, v in bits.items() if k != "mask_broadcast_entropy_bits")

    def summary_metrics(self) -> dict[str, Any]:
        """The realised density (ties can lift it above d) and each layer's."""
        if not self.mask:
            return {}
        kept = self.kept_counts()
        return {
            "density": sum(kept.values()) / sum(self.numel.values()),
            "density_by_layer": {n: kept[n] / self.numel[n] for n in self.prunable},
            "prunable": sum(self.numel.values()),
            "one_time": self.one_time(),
        }

    def state_dict(self) -> dict:
        return {"mask": self.mask}

    def load_state_dict(self, state: dict) -> None:
        device = self.context.device
        self.mask = {n: m.to(device) for n, m in state["mask"].items()}
        self.kept = None
