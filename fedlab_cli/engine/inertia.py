"""Layer-wise inertia: how much each conv/linear weight of the shared model still moves.

The paper's observation is that in low-data FL the middle layers of the shared model freeze after
a few rounds. ``InertiaRecorder`` measures this for any method, as a ``RoundObserver`` called
right after aggregation (before ``after_aggregate``, so LIPS is seen before its sparsification).

The shared model of a round is the mean over all clients of each conv/linear weight: for a tensor
the method aggregates it equals the global model (aggregation sends the global value to every
client), for the others (FedBN's nothing, Separate's everything) it is the mean of the client
models. Per round and tensor it records:

- ``cos_ref``: cosine to the shared model at the end of a reference round (``inertia.ref_rounds``,
  default 2, as the paper); empty for rounds before that reference round;
- ``cos_prev``, ``rel_update``: cosine to, and ``‖w_t − w_{t−1}‖ / ‖w_{t−1}‖`` relative to, the
  previous round; at round 0 the "previous round" is the initial model every client started from;
- ``grad_norm``: the mean over the round's participants of each one's gradient norm of that
  tensor on its last local mini-batch (0 for a client on which it was frozen).

A model with no trained conv/linear weight (FedPM's masked layers: frozen weights, trained
scores) records no rows.

Only the reference snapshots and the previous round's weights are kept, and travel in
checkpoints, so a resumed run records exactly what an uninterrupted one does. The per-layer
scalars of a round reach the host in one transfer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from fedlab_cli.engine.method import LocalTrace
from fedlab_cli.engine.population import Population
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind

if TYPE_CHECKING:
    from fedlab_cli.engine.federation import Federation


class InertiaRow(NamedTuple):
    """One line of ``inertia.csv``; NaN marks a value that is undefined (written empty)."""

    round: int
    layer: str
    role: str
    ref_round: int
    cos_ref: float
    cos_prev: float
    rel_update: float
    grad_norm: float


def tracked_layers(population: Population) -> list[str]:
    """The conv and linear weights, in network (``state_dict``) order."""
    return [n for n in population.params if population.roles[n].kind is Kind.WEIGHT]


class InertiaRecorder:
    """A ``RoundObserver`` that turns each round into ``InertiaRow``s, collected until drained."""

    def __init__(self, population: Population, ref_rounds: Sequence[int]) -> None:
        if not ref_rounds:
            raise FedlabError("inertia.ref_rounds: give at least one reference round")
        negative = [r for r in ref_rounds if r < 0]
        if negative:
            raise FedlabError(
                f"inertia.ref_rounds: rounds are 0-based and must be >= 0 (got {negative[0]})"
            )
        self.ref_rounds = sorted(set(ref_rounds))
        self.layers = tracked_layers(population)
        self.roles = {n: population.roles[n].position.value for n in self.layers}
        self.prev = shared_weights(population, self.layers)  # round -1: the initial model
        self.refs: dict[int, dict[str, Tensor]] = {}
        self.pending: list[InertiaRow] = []

    def on_aggregated(self, federation: Federation, round_index: int, trace: LocalTrace) -> None:
        if not self.layers:  # no trained conv/linear weight (FedPM trains only mask scores)
            return
        current = shared_weights(federation.population, self.layers)
        reached = [r for r in self.ref_rounds if r < round_index and r in self.refs]
        stats = torch.stack(
            [
                layer_stats(current[n], self.prev[n], [self.refs[r][n] for r in reached])
                for n in self.layers
            ]
        )
        grads = mean_over_participants(federation.population, trace, self.layers)
        table = torch.cat([stats, grads.to(stats)[:, None]], dim=1).tolist()  # one host sync
        if round_index in self.ref_rounds:
            self.refs[round_index] = current
        self.prev = current
        for n, (cos_prev, rel_update, *rest) in zip(self.layers, table, strict=True):
            *cos_refs, grad_norm = rest
            by_ref = dict(zip(reached, cos_refs, strict=True))
            for r in self.ref_rounds:
                cos_ref = 1.0 if r == round_index else by_ref.get(r, math.nan)
                self.pending.append(
                    InertiaRow(
                        round_index, n, self.roles[n], r, cos_ref, cos_prev, rel_update, grad_norm
                    )
                )

    def drain(self) -> list[InertiaRow]:
        """The rows recorded since the last call (the run directory appends them)."""
        rows, self.pending = self.pending, []
        return rows

    def state_dict(self) -> dict:
        return {"prev": dict(self.prev), "refs": {r: dict(w) for r, w in self.refs.items()}}

    def load_state_dict(self, state: dict) -> None:
        if not self.layers:
            return
        device = next(iter(self.prev.values())).device
        self.prev = {n: t.to(device) for n, t in state["prev"].items()}
        self.refs = {
            int(r): {n: t.to(device) for n, t in w.items()} for r, w in state["refs"].items()
        }
        self.pending = []


def shared_weights(population: Population, layers: Sequence[str]) -> dict[str, Tensor]:
    """Each tracked tensor of the shared model, flattened: the mean over all clients."""
    return {n: population.mean_all(population.params[n]).flatten() for n in layers}


def mean_over_participants(population: Population, trace: LocalTrace, layers) -> Tensor:
    """Per layer, the mean over the round's participants (on every process) of their last-batch
    gradient norms."""
    local = (
        torch.stack([trace.last_grad_norms[n].float().sum() for n in layers]) if layers else None
    )
    if not population.world.distributed:
        return torch.stack([trace.last_grad_norms[n].float().mean() for n in layers])
    count = torch.tensor([float(len(trace.clients))], device=population.device)
    totals = population.world.sum(torch.cat([local, count]))
    return totals[:-1] / totals[-1]


def layer_stats(current: Tensor, prev: Tensor, refs: Sequence[Tensor]) -> Tensor:
    """``[cos_prev, rel_update, cos_ref...]`` of one tensor, in float64 (cosines near 1)."""
    w, p = current.double(), prev.double()
    w_norm, p_norm = w.norm(), p.norm()
    values = [(w @ p) / (w_norm * p_norm), (w - p).norm() / p_norm]
    for ref in refs:
        r = ref.double()
        values.append((w @ r) / (w_norm * r.norm()))
    return torch.stack(values)


def attach_inertia(federation: Federation, ref_rounds: Sequence[int]) -> InertiaRecorder:
    """Create a recorder on the federation's current (initial) model and register it."""
    recorder = InertiaRecorder(federation.population, ref_rounds)
    federation.observers.append(recorder)
    return recorder
