"""FedPM (Isik et al., "Sparse Random Networks for Communication-Efficient FL", ICLR 2023).

No weight is ever trained: every client holds the same frozen random network (seed-shared) and
learns, per weight and bias, the probability θ = sigmoid(score) of keeping it, as
BerivanIsik/sparse-random-networks@cf6b549 runs it (docs/SPARSE_FL.md §2):

    model: every conv/linear layer masked (fedlab_cli/models/masked.py): frozen w = ±e·√(1/fan_in),
           scores s ~ N(0, 1); each forward uses w ⊙ m, m ~ Bernoulli(sigmoid(s)) drawn afresh
    every round t, the sampled clients c, starting from the global scores:
    1. local training: Adam (lr 0.1) on the scores only, each client's moments kept across
       the rounds it takes part in
    2. uplink: one sample b_c ~ Bernoulli(sigmoid(s_c)) per score; smoothed b̃_c = ε / 1 − ε
    3. server: if t is a multiple of R (prior_reset_every):  α = β = 1
               α += Σ_c w_c·b̃_c,   β += Σ_c w_c·(1 − b̃_c)      (w_c = 1, or K·n_c/Σ n)
               p = (α − 1)/(α + β − 2)  (the posterior mode),   s = logit(p) for every client

With R = 1 (the code) p is the plain mean of the round's smoothed bits; ``samples`` weights it
by the clients' sample counts (the authors' Flower port), the weights scaled to sum to K, the
round's participants, so a round adds K to α + β either way.

Communication per participant: uplink n·H_b(f) + log2 n bits for its n mask entries with f the
fraction of ones in its raw (unsmoothed) bits — the ideal code for i.i.d. bits plus the count
of ones — and the raw n bits beside it (``uplink_raw_bits``); downlink 32 bits per score (the
float probabilities). The frozen weights come from the seed and are never sent.

Evaluation: personal accuracy with each client's scores, a fresh mask per test batch; the
global model (``eval.global``) with a fresh mask per test batch (``acc_global``, the code's
number) and with the fixed mask θ > 0.5 (``acc_global_threshold``, the paper's final model),
as ``eval_mask`` chooses.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from fedlab_cli.engine.method import (
    FLOAT_BITS,
    Method,
    MethodParams,
    RunContext,
    Traffic,
    binary_entropy,
)
from fedlab_cli.engine.population import Population
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind, noise
from fedlab_cli.models.masked import masked

UPLINK = 4
"""Noise purpose of the uplink samples (the trainer's are 1-3): never shared with a forward."""


class FedPMParams(MethodParams):
    epsilon: float = Field(
        0.01, gt=0, lt=0.5, description="ε: uploaded bits smoothed to ε / 1 − ε in the posterior"
    )
    prior_reset_every: int = Field(
        1, ge=1, description="R: α = β = 1 at every R-th round (1: every round, the code)"
    )
    weighting: Literal["uniform", "samples"] = Field(
        "uniform", description="w_c: 1 (the code) or by sample count (the authors' Flower port)"
    )
    eval_mask: Literal["sample", "threshold", "both"] = Field(
        "both",
        description="global model's mask: fresh samples (acc_global), θ > 0.5, or both "
        "(acc_global sampled, acc_global_threshold)",
    )
    init: Literal["signed_constant", "kaiming_uniform"] = Field(
        "signed_constant", description="frozen weights: ±e·√(1/fan_in) (the code) or the model's"
    )


def coded_bits(ones: Tensor, n: int) -> Tensor:
    """n·H_b(f) + log2 n: the ideal code of n i.i.d. bits with ``ones`` of them set."""
    return n * binary_entropy(ones.double() / n) + math.log2(n)


def threshold_scores(score: Tensor) -> Tensor:
    """Scores whose sampled mask is θ > 0.5 on every draw (sigmoid(±∞) is exactly 1 or 0)."""
    return torch.where(torch.sigmoid(score) > 0.5, math.inf, -math.inf).to(score.dtype)


class FedPM(Method):
    Params: ClassVar[type[MethodParams]] = FedPMParams
    description: ClassVar[str] = "FedPM: Bernoulli masks over a frozen random network, < 1 bpp"

    @classmethod
    def transform_model(cls, model: nn.Module, params: MethodParams) -> nn.Module:
        return masked(model, params.init)

    def setup(self, population: Population, context: RunContext) -> None:
        super().setup(population, context)
        roles = population.roles
        for name in population.tensors():
            if roles[name].kind not in (Kind.SCORE, Kind.FROZEN):
                raise FedlabError(
                    f"model.name: fedpm masks every conv and linear layer and trains nothing "
                    f"else, but {context.model!r} has {name!r} ({roles[name].kind.value})"
                )
        self.scores = [n for n in population.params if roles[n].kind is Kind.SCORE]
        self.n = sum(population.params[n][0].numel() for n in self.scores)
        self.seed = context.seed
        self.alpha: dict[str, Tensor] = {}  # the Beta posterior's counts, float64
        self.beta: dict[str, Tensor] = {}
        self.metrics: dict[str, Any] = {}
        self.uplink: Tensor | None = None  # coded uplink bits of the round, summed
        self.clients: list[int] = []

    def shares(self, name: str, role) -> bool:
        return role.kind is Kind.SCORE

    def before_local_training(
        self, population: Population, clients: list[int], round_index: int
    ) -> None:
        self.clients = list(clients)  # the participants held here, in the order of their rows

    # -- server ------------------------------------------------------------------------------

    def aggregate(
        self, population: Population, participants: Tensor, weights: Tensor, round_index: int
    ) -> None:
        """Steps 2-3: each participant's sampled bits replace its scores on the wire; the
        server's posterior mode becomes everyone's scores."""
        params, clients = population.params, self.clients
        ones = self.upload(population, clients, round_index)
        if self.params.weighting == "uniform":
            weights = torch.ones(len(clients), dtype=torch.float64, device=population.device)
        k = population.world.sum(
            torch.tensor(float(len(clients)), dtype=torch.float64, device=population.device)
        )
        means = population.mean_over(self.scores, participants, weights.double())
        if round_index % self.params.prior_reset_every == 0 or not self.alpha:
            self.alpha = {n: torch.ones_like(m, dtype=torch.float64) for n, m in means.items()}
            self.beta = {n: torch.ones_like(m, dtype=torch.float64) for n, m in means.items()}
        density = torch.zeros((), dtype=torch.float64, device=population.device)
        for name, mean in means.items():
            added = k.to(mean.device) * mean.double()
            self.alpha[name] += added
            self.beta[name] += k.to(mean.device) - added
            p = (self.alpha[name] - 1) / (self.alpha[name] + self.beta[name] - 2)
            density += p.sum()
            params[name].copy_(torch.logit(p).to(params[name].dtype).expand_as(params[name]))
        self.record(population, participants, ones, density / self.n)

    def upload(self, population: Population, clients: list[int], round_index: int) -> Tensor:
        """Each participant's one Bernoulli(θ) sample per score, smoothed, written over its
        scores (they are what the server receives); ``[k]`` raw ones per participant."""
        eps = self.params.epsilon
        ones = torch.zeros(len(clients), dtype=torch.long, device=population.device)
        for i, client in enumerate(clients):  # one at a time: bounded memory
            key = torch.tensor([noise.client_key(self.seed, client)], dtype=torch.long)
            with noise.stream(key, noise.mix64(UPLINK, round_index)):
                for name in self.scores:
                    score = population.params[name][client - population.first]
                    bits = noise.uniform(score.shape, score.device) < torch.sigmoid(score)[None]
                    ones[i] += bits.sum()
                    score.copy_(torch.where(bits[0], 1 - eps, eps))
        return ones

    def record(self, population: Population, rows: Tensor, ones: Tensor, density: Tensor) -> None:
        """The round's bpp, ones fraction and mean p, over every participant (any process)."""
        every = population.gather_participants(ones, rows)
        coded = coded_bits(every, self.n)
        f = every.double() / self.n
        code_f = self.params.epsilon + (1 - 2 * self.params.epsilon) * f  # smoothed sums
        self.uplink = coded.sum()
        self.metrics = {
            "bpp": (coded / self.n).mean(),
            "bpp_smoothed": ((self.n * binary_entropy(code_f) + math.log2(self.n)) / self.n).mean(),
            "ones_fraction": f.mean(),
            "mask_density_mean": density,
            "uplink_raw_bits": float(self.n * len(every)),
        }

    def global_variants(
        self, population: Population
    ) -> dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]]:
        if self.params.eval_mask != "both":
            return {}
        params, buffers = super().global_model(population)
        return {"threshold": (self.thresholded(params), buffers)}

    def global_model(self, population: Population) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params, buffers = super().global_model(population)
        if self.params.eval_mask == "threshold":
            return self.thresholded(params), buffers
        return params, buffers

    def thresholded(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: threshold_scores(t) if n in self.scores else t for n, t in params.items()}

    # -- communication and records -----------------------------------------------------------

    def communication(
        self, population: Population, clients: list[int], round_index: int
    ) -> Traffic:
        """Up: the coded bits of every participant's sample; down: 32 bits per score."""
        uplink = 0.0 if self.uplink is None else float(self.uplink)
        return Traffic(uplink, float(FLOAT_BITS * self.n * len(clients)))

    def round_metrics(self) -> dict[str, Any]:
        return self.metrics

    def summary_metrics(self) -> dict[str, Any]:
        return {"mask_entries": self.n}

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        device = self.context.device
        self.alpha = {n: t.to(device) for n, t in state["alpha"].items()}
        self.beta = {n: t.to(device) for n, t in state["beta"].items()}
