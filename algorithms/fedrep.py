"""FedRep (Collins et al. 2021): a shared representation, a personal head.

Each round a client first fits its head on top of the frozen body for ``E − rep_epochs``
epochs, then updates the body under its fixed head for ``rep_epochs`` epochs. The server
averages the body (BN affine and running statistics included, REFERENCE.md decision 8); the
head (the last linear layer's weight and bias) never leaves the client.

Momentum: the engine keeps one optimizer state per tensor for the whole round, and a frozen
tensor gets no step at all. Since the two phases train disjoint tensors, this is what one SGD
optimizer over all parameters does when frozen parameters have no gradient (the reference
trains both phases with one optimizer): neither phase sees momentum from the other, and a
frozen tensor never moves.

The model stays in train mode in both phases, as in the reference, so the BN running statistics
(which no phase trains) keep tracking the client's batches during the head phase too.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fedlab_cli.engine.method import Method, MethodParams, Phase, RunContext
from fedlab_cli.engine.population import Population
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import TensorRole


class FedRepParams(MethodParams):
    rep_epochs: int = Field(1, ge=0, description="local epochs on the body (the rest: the head)")


def is_head(name: str, role: TensorRole) -> bool:
    return role.is_head


def is_body(name: str, role: TensorRole) -> bool:
    return not role.is_head


class FedRep(Method):
    Params: ClassVar[type[MethodParams]] = FedRepParams
    description: ClassVar[str] = "FedRep: head trained then body trained; body shared, head local"
    has_global_model: ClassVar[bool] = False

    def setup(self, population: Population, context: RunContext) -> None:
        """Reject a body share larger than the round: the head phase cannot be negative."""
        super().setup(population, context)
        rep = self.params.rep_epochs
        if rep > context.local_epochs:
            raise FedlabError(
                f"method.rep_epochs: must be at most training.local_epochs "
                f"({context.local_epochs}) (got {rep})"
            )

    def local_phases(self, round_index: int, local_epochs: int) -> list[Phase]:
        """Head first (body frozen), then body (head frozen); empty phases are left out."""
        rep = self.params.rep_epochs
        phases = [Phase(local_epochs - rep, is_head), Phase(rep, is_body)]
        return [phase for phase in phases if phase.epochs > 0]

    def shares(self, name: str, role: TensorRole) -> bool:
        return not role.is_head
