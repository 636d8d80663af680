"""The method interface: FedAvg by default; a method overrides only how it differs.

Hooks, in the order the round loop calls them (every one has a FedAvg default):

- ``setup(population, context)``: once, on the freshly initialised population (e.g. keep the
  initial weights); a resumed run calls it too, then ``load_state_dict``.
- ``before_local_training(population, clients, round_index)``: e.g. snapshot the start weights.
- ``local_phases(round_index, local_epochs)``: phases of local training, each with the
  parameters it updates (FedRep: head, then body).
- ``extra_loss(client, inputs, logits, forward)``: a term added to cross-entropy (pFedSD).
- ``after_local_step(client, params, momentum)``: adjust weights after each SGD step (masks).
- ``after_local_training(population, clients, round_index, trace)``: sees each participant's
  last-mini-batch gradients (when ``wants_last_gradients``) and losses.
- ``shares(name, role)`` and ``aggregate(population, participants, weights, round_index)``:
  which tensors the server averages, and how.
- ``after_aggregate(population, round_index)``: a per-client step after syncing (LIPS).
- ``round_metrics()`` / ``summary_metrics()``: extra fields for ``metrics.jsonl`` / the summary.

``final_accuracy`` names which of the two per-round accuracies is the method's result
(REFERENCE.md decision 2). Hyperparameters are a pydantic model, ``Params``, owned by the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from fedlab_cli.engine.population import Population, weighted_mean
from fedlab_cli.models import TensorRole


class Forward(Protocol):
    """The run's architecture on given tensors; ``train`` picks the mode (default: current)."""

    def __call__(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        inputs: Tensor,
        *,
        train: bool | None = None,
    ) -> Tensor: ...


class MethodParams(BaseModel):
    """A method's own typed hyperparameters, given under ``method.`` in the run spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RunContext:
    """Facts about the run that a method may need (schedules, per-dataset defaults)."""

    rounds: int
    local_epochs: int
    dataset: str
    num_classes: int
    model: str
    image_shape: tuple[int, int, int]
    seed: int
    device: torch.device

    @property
    def protocol_dataset(self) -> str:
        """The dataset whose paper defaults apply: a synthetic stand-in takes its original's."""
        return self.dataset.removeprefix("synthetic_")


@dataclass(frozen=True)
class Phase:
    """``epochs`` of local training that update only the parameters ``trains`` accepts."""

    epochs: int
    trains: Callable[[str, TensorRole], bool]


def train_all(name: str, role: TensorRole) -> bool:
    return True


@dataclass
class LocalTrace:
    """What local training saw, stacked over the round's participants (in ``clients`` order).

    ``last_grad_norms[name]`` is ``[k]``: each client's gradient norm of that parameter on its
    last mini-batch (0 where the parameter was frozen). ``last_grads[name]`` is ``[k, *shape]``,
    filled only when the method sets ``wants_last_gradients``.
    """

    clients: list[int]
    losses: Tensor
    last_grad_norms: dict[str, Tensor]
    last_grads: dict[str, Tensor] | None


class Method:
    """Federated averaging of every floating tensor (parameters and BN statistics)."""

    Params: ClassVar[type[MethodParams]] = MethodParams
    description: ClassVar[str] = "FedAvg: average every parameter and BN statistic"
    final_accuracy: ClassVar[Literal["acc_agg", "acc_local"]] = "acc_agg"
    aggregates: ClassVar[bool] = True
    wants_last_gradients: ClassVar[bool] = False

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    def setup(self, population: Population, context: RunContext) -> None:
        """Once, on the initial population, before any round."""
        self.context = context

    def before_local_training(
        self, population: Population, clients: list[int], round_index: int
    ) -> None:
        """Right before the participants train."""

    def local_phases(self, round_index: int, local_epochs: int) -> list[Phase]:
        """All parameters train for all local epochs."""
        return [Phase(local_epochs, train_all)]

    def extra_loss(
        self, client: int, inputs: Tensor, logits: Tensor, forward: Forward
    ) -> Tensor | None:
        """A term added to the cross-entropy of each local step; FedAvg has none."""
        return None

    def after_local_step(
        self, client: int, params: dict[str, Tensor], momentum: dict[str, Tensor]
    ) -> None:
        """Called after every local SGD step (under no_grad), e.g. to re-apply masks."""

    @property
    def hooks_local_steps(self) -> bool:
        """Whether ``after_local_step`` does anything; strategies skip calling it otherwise."""
        return type(self).after_local_step is not Method.after_local_step

    def after_local_training(
        self, population: Population, clients: list[int], round_index: int, trace: LocalTrace
    ) -> None:
        """Right after the participants trained, before the local evaluation."""

    def shares(self, name: str, role: TensorRole) -> bool:
        """Whether the server averages this tensor (else it stays on the client)."""
        return True

    def shared_names(self, population: Population) -> list[str]:
        return [
            name
            for name, tensor in population.tensors().items()
            if tensor.is_floating_point() and self.shares(name, population.roles[name])
        ]

    def aggregate(
        self, population: Population, participants: Tensor, weights: Tensor, round_index: int
    ) -> None:
        """Weighted mean of the shared tensors over participants, sent back to every client."""
        tensors = population.tensors()
        for name in self.shared_names(population):
            stacked = tensors[name]
            stacked.copy_(weighted_mean(stacked, participants, weights).expand_as(stacked))

    def after_aggregate(self, population: Population, round_index: int) -> None:
        """A per-client step right after aggregation; FedAvg has none."""

    def round_metrics(self) -> dict[str, Any]:
        """Extra fields for this round's line of ``metrics.jsonl``. Values may be tensors (or
        dicts and lists of them): they are read back to the host only when the round is
        logged, so computing them inside a round costs no device-to-host sync."""
        return {}

    def summary_metrics(self) -> dict[str, Any]:
        """Extra fields for ``summary.json``."""
        return {}

    def state_dict(self) -> dict:
        """Method state that a checkpoint must carry (e.g. teachers, masks); none for FedAvg."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


def host_values(value: Any) -> Any:
    """``value`` with every tensor in it read back as Python numbers (nested dicts and lists)."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: host_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [host_values(v) for v in value]
    return value
