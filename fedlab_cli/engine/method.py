"""The method interface: FedAvg by default; a method overrides only how it differs.

Hooks, in the order the round loop calls them:
- ``shares(name, role)``: which tensors the server averages (FedAvg: all floating tensors).
- ``aggregate(population, participants, weights)``: the aggregation rule.
- ``after_aggregate(population, round_index)``: a per-client step after syncing (LIPS).
``final_accuracy`` names which of the two per-round accuracies is the method's result
(REFERENCE.md decision 2). Hyperparameters are a pydantic model, ``Params``, owned by the method.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from fedlab_cli.engine.population import Population, weighted_mean
from fedlab_cli.models import TensorRole


class MethodParams(BaseModel):
    """A method's own typed hyperparameters, given under ``method.`` in the run spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Method:
    """Federated averaging of every floating tensor (parameters and BN statistics)."""

    Params: ClassVar[type[MethodParams]] = MethodParams
    description: ClassVar[str] = "FedAvg: average every parameter and BN statistic"
    final_accuracy: ClassVar[Literal["acc_agg", "acc_local"]] = "acc_agg"
    aggregates: ClassVar[bool] = True

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    def shares(self, name: str, role: TensorRole) -> bool:
        """Whether the server averages this tensor (else it stays on the client)."""
        return True

    def shared_names(self, population: Population) -> list[str]:
        return [
            name
            for name, tensor in population.tensors().items()
            if tensor.is_floating_point() and self.shares(name, population.roles[name])
        ]

    def aggregate(self, population: Population, participants: Tensor, weights: Tensor) -> None:
        """Weighted mean of the shared tensors over participants, sent back to every client."""
        tensors = population.tensors()
        for name in self.shared_names(population):
            tensors[name].copy_(
                weighted_mean(tensors[name], participants, weights).expand_as(tensors[name])
            )

    def after_aggregate(self, population: Population, round_index: int) -> None:
        """A per-client step right after aggregation; FedAvg has none."""

    def state_dict(self) -> dict:
        """Method state that a checkpoint must carry (e.g. teachers, masks); none for FedAvg."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
