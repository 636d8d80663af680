"""FedBN (Li et al. 2021) as the LIPS reference runs it: share conv and linear weights only.

BN affine parameters, BN running statistics and all biases stay on the client (REFERENCE.md
decision 3). ``share_bias: true`` gives textbook FedBN, which also averages the biases.

``freeze_middle_after: R`` is the paper's A_fix (Table 1, decision 7): from round R on, the
middle layers are neither trained nor aggregated, so every client keeps the values it had after
round R-1's aggregation (equally: after round R's, which no longer touches them); first and last
layers go on as before. "Middle layer" means every parameter whose role is middle: conv/linear
weights, their biases and their BN affine parameters. BN running statistics are not trained, so
they keep tracking each client's data (freezing them would need an eval-mode forward).
"""

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from fedlab_cli.engine.method import FLOAT_BITS, Method, MethodParams, Phase, Traffic
from fedlab_cli.engine.population import Population
from fedlab_cli.models import Kind, Position, TensorRole


class FedBNParams(MethodParams):
    share_bias: bool = False
    freeze_middle_after: int | None = Field(
        None, ge=0, description="A_fix: from this round on, middle layers stay fixed"
    )


class FedBN(Method):
    Params: ClassVar[type[MethodParams]] = FedBNParams
    description: ClassVar[str] = "FedBN: share conv/linear weights; BN and biases stay local"
    has_global_model: ClassVar[bool] = False

    def shares(self, name: str, role: TensorRole) -> bool:
        return role.kind is Kind.WEIGHT or (self.params.share_bias and role.kind is Kind.BIAS)

    def middle_frozen(self, round_index: int) -> bool:
        """A_fix: whether the middle layers are fixed in this round."""
        start = self.params.freeze_middle_after
        return start is not None and round_index >= start

    def local_phases(self, round_index: int, local_epochs: int) -> list[Phase]:
        if not self.middle_frozen(round_index):
            return super().local_phases(round_index, local_epochs)
        return [Phase(local_epochs, lambda name, role: role.position is not Position.MIDDLE)]

    def aggregated_names(self, population: Population, round_index: int) -> list[str]:
        """The shared tensors, less frozen middle layers (A_fix): what travels this round."""
        frozen = self.middle_frozen(round_index)
        return [
            name
            for name in self.shared_names(population)
            if not (frozen and population.roles[name].position is Position.MIDDLE)
        ]

    def aggregate(
        self, population: Population, participants: Tensor, weights: Tensor, round_index: int
    ) -> None:
        """FedAvg of the shared tensors, leaving frozen middle layers where they are."""
        tensors = population.tensors()
        names = self.aggregated_names(population, round_index)
        for name, mean in population.mean_over(names, participants, weights).items():
            tensors[name].copy_(mean.expand_as(tensors[name]))

    def communication(
        self, population: Population, clients: list[int], round_index: int
    ) -> Traffic:
        """Each participant sends and receives the tensors aggregated this round, 32-bit."""
        tensors = population.tensors()
        names = self.aggregated_names(population, round_index)
        total = float(FLOAT_BITS * sum(tensors[n][0].numel() for n in names) * len(clients))
        return Traffic(total, total)
