"""The method interface: FedAvg by default; a method overrides only how it differs.

Hooks, in the order a run calls them (every one has a FedAvg default):

Building, once:
- ``transform_model(model, params)`` (class method): change the architecture before the
  population is made (FedPM swaps conv/linear layers for masked-score layers).
- ``setup(population, context)``: on the initial population; declare per-client state here
  with ``population.add_state(name, tensor)`` — the engine stacks, chunks, moves and
  checkpoints it, and hands each block its slice (``Block.state``). A resumed run calls
  ``setup`` too, then ``load_state_dict``.
- ``attach_calibration(calibration)``: on every build, fresh or resumed, the means of that
  round trip, for a method that runs it again during training (SSFL after warm-up rounds).
- ``calibrate(population, calibration)``: a one-time round trip before round 0 (SSFL's
  saliency): clients compute on their data at the initial weights, the server combines. Not
  called on ``--resume``: what it found must travel in ``state_dict`` or client state.

Each round:
- ``before_local_training(population, clients, round_index)``.
- ``local_phases(round_index, local_epochs)``: phases, each with the parameters it updates.
- On every local step of a block of k clients (all ``[k, ...]`` tensors, no per-client loop):
  ``extra_loss(block, params, inputs, logits)`` → ``[k]`` added to the cross-entropy (pFedSD,
  FedProx); ``transform_gradients(block, params, grads)`` before clipping and the optimizer
  step (masks, proximal terms); ``after_step(block, params, optimizer_state)`` (re-apply masks).
- ``after_local_training(population, clients, round_index, trace)``: sees what training saw.
- ``shares(name, role)`` and ``aggregate(population, participants, weights, round_index)``.
- ``after_aggregate(population, round_index)``: a per-client step after syncing (LIPS).
- ``communication(population, clients, round_index)``: what each participant sent and received.
- ``round_metrics()`` / ``summary_metrics()``: extra fields for ``metrics.jsonl`` / the summary.

Block hooks run inside the engine's training of a chunk of clients, which an out-of-memory
retry may redo: they must only change the tensors they are given (the block's parameters,
optimizer state and ``Block.state``), which the engine commits when the chunk succeeds.

``final_accuracy`` names which of the two per-round accuracies is the method's result
(REFERENCE.md decision 2); ``has_global_model`` whether ``global_model`` (the model the server
holds, evaluated on the union of the test splits with ``eval.global``) means anything;
``global_variants(population)`` other forms of it evaluated the same way, each recorded as
``acc_global_<name>`` (FedPM's model with the fixed mask θ > 0.5 beside its sampled one).
Hyperparameters are a pydantic model, ``Params``, owned by the method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from fedlab_cli.engine.population import Population
from fedlab_cli.models import TensorRole

if TYPE_CHECKING:
    from fedlab_cli.engine.calibration import Calibration

FLOAT_BITS = 32


def binary_entropy(f: Tensor | float) -> Tensor | float:
    """H_b(f) in bits, elementwise for a tensor (0 at f = 0 and f = 1): the ideal coded size
    per entry of i.i.d. bits with a share f of ones (SSFL's mask, FedPM's sampled bits)."""
    t = f if isinstance(f, Tensor) else torch.tensor(f, dtype=torch.float64)
    inside = (t > 0) & (t < 1)
    g = torch.where(inside, t, torch.full_like(t, 0.5))
    h = torch.where(inside, -(g * torch.log2(g) + (1 - g) * torch.log2(1 - g)), 0.0)
    return h if isinstance(f, Tensor) else float(h)


class BlockForward(Protocol):
    """k models on their own inputs: ``[k, ...]`` tensors in, ``[k, b, classes]`` logits out;
    ``train`` picks the mode for this call (default: the current one)."""

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

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


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
    architecture: nn.Module | None = None  # the built model (after transform_model)

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
class Block:
    """k participants training together (one, in the sequential strategy).

    ``state[name]`` is the block's ``[k, ...]`` slice of each tensor declared with
    ``Population.add_state``; hooks may change it in place (committed with the parameters).
    ``forward`` runs k models (e.g. teachers) on ``[k, b, ...]`` inputs.
    """

    clients: list[int]
    index: Tensor
    round: int
    state: dict[str, Tensor]
    forward: BlockForward


@dataclass
class LocalTrace:
    """What local training saw, stacked over the round's participants (in ``clients`` order).

    ``last_grad_norms[name]`` is ``[k]``: each client's gradient norm of that parameter on its
    last mini-batch (0 where the parameter was frozen). ``last_grads[name]`` is ``[k, *shape]``,
    filled only when the method sets ``wants_last_gradients``. ``steps[i]`` is how many local
    steps client ``clients[i]`` took.
    """

    clients: list[int]
    losses: Tensor
    last_grad_norms: dict[str, Tensor]
    last_grads: dict[str, Tensor] | None
    steps: list[int] = field(default_factory=list)


@dataclass
class Traffic:
    """Bits the round's participants sent (uplink) and received (downlink), summed over them."""

    uplink_bits: float
    downlink_bits: float


class Method:
    """Federated averaging of every floating tensor (parameters and BN statistics)."""

    Params: ClassVar[type[MethodParams]] = MethodParams
    description: ClassVar[str] = "FedAvg: average every parameter and BN statistic"
    final_accuracy: ClassVar[Literal["acc_agg", "acc_local"]] = "acc_agg"
    aggregates: ClassVar[bool] = True
    has_global_model: ClassVar[bool] = True
    wants_last_gradients: ClassVar[bool] = False

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def transform_model(cls, model: nn.Module, params: MethodParams) -> nn.Module:
        """The architecture this method trains, made from the spec's model; FedAvg's is it."""
        return model

    def setup(self, population: Population, context: RunContext) -> None:
        """Once, on the initial population, before any round."""
        self.context = context

    def attach_calibration(self, calibration: Calibration) -> None:
        """Every build, before ``calibrate`` (which a resumed run skips): keep ``calibration``
        to run the round trip later in training; FedAvg does not."""

    def calibrate(self, population: Population, calibration: Calibration) -> None:
        """A one-time client round trip before round 0; FedAvg has none."""

    # -- local training ----------------------------------------------------------------------

    def before_local_training(
        self, population: Population, clients: list[int], round_index: int
    ) -> None:
        """Right before the participants train."""

    def local_phases(self, round_index: int, local_epochs: int) -> list[Phase]:
        """All parameters train for all local epochs."""
        return [Phase(local_epochs, train_all)]

    def extra_loss(
        self, block: Block, params: dict[str, Tensor], inputs: Tensor, logits: Tensor
    ) -> Tensor | None:
        """``[k]`` terms added to the block's cross-entropies; FedAvg has none."""
        return None

    def transform_gradients(
        self, block: Block, params: dict[str, Tensor], grads: dict[str, Tensor]
    ) -> None:
        """Change the block's gradients in place before clipping and the step; FedAvg: no."""

    def after_step(
        self,
        block: Block,
        params: dict[str, Tensor],
        optimizer_state: dict[str, dict[str, Tensor]],
    ) -> None:
        """Adjust parameters (and optimizer state) after each step, in place; FedAvg: no."""

    def after_local_training(
        self, population: Population, clients: list[int], round_index: int, trace: LocalTrace
    ) -> None:
        """Right after the participants trained, before the local evaluation."""

    # -- server ------------------------------------------------------------------------------

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
        means = population.mean_over(self.shared_names(population), participants, weights)
        for name, mean in means.items():
            tensors[name].copy_(mean.expand_as(tensors[name]))

    def after_aggregate(self, population: Population, round_index: int) -> None:
        """A per-client step right after aggregation; FedAvg has none."""

    def global_model(self, population: Population) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The server's model after aggregation: every client holds it (FedAvg sends it to all)."""
        return population.client(population.first)

    def global_variants(
        self, population: Population
    ) -> dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]]:
        """More global models to score beside ``global_model``, by name (``acc_global_<name>``);
        FedAvg has none."""
        return {}

    # -- communication -----------------------------------------------------------------------

    def communication(
        self, population: Population, clients: list[int], round_index: int
    ) -> Traffic:
        """Each participant uploads and downloads every shared tensor as 32-bit floats."""
        if not self.aggregates:
            return Traffic(0.0, 0.0)
        tensors = population.tensors()
        per_client = FLOAT_BITS * sum(tensors[n][0].numel() for n in self.shared_names(population))
        total = float(per_client * len(clients))
        return Traffic(total, total)

    def one_time_bits(self) -> float:
        """Bits sent once outside the rounds (calibration, a mask broadcast); FedAvg: none."""
        return 0.0

    # -- records -----------------------------------------------------------------------------

    def round_metrics(self) -> dict[str, Any]:
        """Extra fields for this round's line of ``metrics.jsonl``. Values may be tensors (or
        dicts and lists of them): they are read back to the host only when the round is
        logged, so computing them inside a round costs no device-to-host sync."""
        return {}

    def summary_metrics(self) -> dict[str, Any]:
        """Extra fields for ``summary.json``."""
        return {}

    def state_dict(self) -> dict:
        """Method state beyond the declared per-client state that a checkpoint must carry."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


def overrides(method: Method | type[Method], hook: str) -> bool:
    """Whether ``method`` (an instance or a class) overrides a hook of ``Method`` (the engine
    skips no-op hooks); class methods such as ``transform_model`` included."""
    owner = method if isinstance(method, type) else type(method)
    return inspect.getattr_static(owner, hook) is not inspect.getattr_static(Method, hook)


def host_values(value: Any) -> Any:
    """``value`` with every tensor in it read back as Python numbers (nested dicts and lists)."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: host_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [host_values(v) for v in value]
    return value
