"""FedProx (Li et al. 2020): FedAvg whose local objective adds (μ/2)·‖w − w_global‖².

The proximal term keeps each participant near the global model it received this round; with
μ = 0 it is FedAvg. The anchor ``w_global`` is declared client state, set for the round's
participants right before they train, so the engine chunks it with them.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from fedlab_cli.engine.method import Block, Method, MethodParams, RunContext
from fedlab_cli.engine.population import Population


class FedProxParams(MethodParams):
    mu: float = Field(0.01, ge=0, description="weight μ of the proximal term")


class FedProx(Method):
    Params: ClassVar[type[MethodParams]] = FedProxParams
    description: ClassVar[str] = "FedProx: FedAvg + (mu/2)·||w - w_global||^2 in local training"

    def setup(self, population: Population, context: RunContext) -> None:
        super().setup(population, context)
        for name, tensor in population.params.items():
            population.add_state(f"anchor.{name}", tensor.clone())

    def before_local_training(self, population, clients, round_index) -> None:
        idx = population.index(clients)
        for name, tensor in population.params.items():
            population.state[f"anchor.{name}"][idx] = tensor[idx]

    def extra_loss(self, block: Block, params, inputs, logits) -> Tensor:
        distance = sum(
            (p - block.state[f"anchor.{n}"]).pow(2).flatten(1).sum(1) for n, p in params.items()
        )
        return self.params.mu / 2 * distance
