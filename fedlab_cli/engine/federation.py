"""The round loop: local training, evaluate, aggregate, after-aggregate, evaluate, log.

``Federation`` holds the parts a run is made of (``build.build_federation`` assembles them) and
only runs rounds; ``run`` drives it round by round and hands each round's record to callbacks
(the run directory writer, the live view), so tracking and checkpointing stay out of the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from fedlab_cli.engine.client_data import ClientData
from fedlab_cli.engine.method import LocalTrace, Method, host_values
from fedlab_cli.engine.population import Population, to_device, weights_sha256
from fedlab_cli.engine.trainer import LocalTrainer
from fedlab_cli.engine.world import heartbeat
from fedlab_cli.errors import TrainingDivergedError
from fedlab_cli.spec.model import RunSpec

LOCAL, AGGREGATED = 0, 1
"""Evaluation scopes of a round (they draw different noise in stochastic models)."""


@dataclass
class RoundRecord:
    """What one round measured; ``acc_*`` are None on rounds that are not evaluated."""

    round: int
    loss: float
    acc_local: float | None
    acc_agg: float | None
    seconds: float
    participants: int
    acc_local_clients: list[float] | None
    acc_agg_clients: list[float] | None
    grad_norms: dict[str, float] = field(default_factory=dict)
    uplink_bits: float = 0.0
    downlink_bits: float = 0.0
    acc_global: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self, with_global: bool = False) -> dict:
        """One ``metrics.jsonl`` line: the fields above, method extras merged in
        (``acc_global`` only in runs that record it)."""
        skip = {"extras"} if with_global else {"extras", "acc_global"}
        record = {k: v for k, v in self.__dict__.items() if k not in skip}
        return {**record, **self.extras}


class RoundObserver(Protocol):
    """Watches each round right after aggregation (before ``after_aggregate``), e.g. to record
    how much the shared model still moves. Its state travels in checkpoints."""

    def on_aggregated(
        self, federation: Federation, round_index: int, trace: LocalTrace
    ) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Federation:
    """A population of clients, their data, a method and a strategy, ready to run rounds."""

    def __init__(
        self,
        spec: RunSpec,
        device: torch.device,
        model: nn.Module,
        population: Population,
        method: Method,
        data: ClientData,
        strategy: LocalTrainer,
    ) -> None:
        self.spec = spec
        self.device = device
        self.model = model
        self.population = population
        self.method = method
        self.data = data
        self.strategy = strategy
        self.observers: list[RoundObserver] = []
        self.generator = torch.Generator(device=device).manual_seed(spec.seed)
        self.next_round = 0
        self.splits = None
        self.notice: str | None = None
        self._test_union: Tensor | None = None
        self.initial_sha256: str | None = None  # set by a build that changed the weights

    def initial_weights_sha256(self) -> str:
        """The fingerprint of the weights this run started from, as every method of the seed
        does: the build's, recorded before a model transform or calibration changed them, else
        the population's own (``compare`` checks that every method saw the same)."""
        return self.initial_sha256 or weights_sha256(self.population)

    def engine_description(self) -> dict[str, str]:
        """How this run executes, ``auto`` settings resolved (for summary.json and the title)."""
        precision = self.strategy.precision
        return {
            "strategy": self.strategy.name,
            "autocast": precision.autocast,
            "layout": "channels_last" if precision.channels_last else "contiguous",
        }

    @property
    def rounds(self) -> int:
        return self.spec.federation.rounds

    def participants(self, round_index: int) -> list[int]:
        """All clients, or a fresh sample of them each round (seeded by seed and round)."""
        num_clients = self.spec.data.num_clients
        share = self.spec.federation.participation
        if share >= 1.0:
            return list(range(num_clients))
        rng = np.random.default_rng([self.spec.seed, round_index])
        count = max(1, round(share * num_clients))
        return sorted(rng.choice(num_clients, size=count, replace=False).tolist())

    def is_eval_round(self, round_index: int) -> bool:
        return (round_index + 1) % self.spec.eval.every == 0 or round_index == self.rounds - 1

    def run_round(self) -> RoundRecord:
        t = self.next_round
        start = time.perf_counter()
        world = self.population.world
        heartbeat(world, t)
        clients = self.participants(t)  # on every process
        method, population, strategy, data = self.method, self.population, self.strategy, self.data
        local = population.local(clients)  # those held here
        method.before_local_training(population, local, t)
        trace = strategy.train(population, local, data, self.generator, method, t, clients)
        method.after_local_training(population, local, t, trace)
        evaluate = self.is_eval_round(t)
        acc_local = self.accuracies(t, LOCAL) if evaluate else None
        acc_global = None
        extra_globals: dict[str, float] = {}
        if method.aggregates:
            chosen = population.index(local)
            weights = data.train_counts[to_device(local, self.device)]
            method.aggregate(population, chosen, weights, t)
            for observer in self.observers:
                observer.on_aggregated(self, t, trace)
            if evaluate and self.spec.eval.global_model:
                params, buffers = method.global_model(population)
                acc_global = strategy.evaluate_model(params, buffers, data, self.test_union, t)
                variants = method.global_variants(population).items()
                for scope, (name, (params, buffers)) in enumerate(variants, start=2):
                    union = self.test_union
                    acc = strategy.evaluate_model(params, buffers, data, union, t, -scope)
                    extra_globals[f"acc_global_{name}"] = acc
            method.after_aggregate(population, t)
            acc_agg = self.accuracies(t, AGGREGATED) if evaluate else None
        else:
            acc_agg = acc_local
            for observer in self.observers:
                observer.on_aggregated(self, t, trace)
        traffic = method.communication(population, clients, t)
        counts = world.owners(clients, population.total_clients)
        losses = world.gather(trace.losses, counts)
        check_finite(losses, clients, t)  # the round's first read back to the host
        self.next_round = t + 1
        return RoundRecord(
            round=t,
            loss=float(losses.mean()),
            acc_local=_mean(acc_local),
            acc_agg=_mean(acc_agg),
            seconds=time.perf_counter() - start,
            participants=len(clients),
            acc_local_clients=_listed(acc_local),
            acc_agg_clients=_listed(acc_agg),
            grad_norms=self._mean_grad_norms(trace, len(clients)),
            uplink_bits=float(traffic.uplink_bits),
            downlink_bits=float(traffic.downlink_bits),
            acc_global=acc_global,
            extras={**extra_globals, **host_values(method.round_metrics())},
        )

    def accuracies(self, round_index: int, scope: int) -> Tensor:
        """Every client's accuracy (%), ``[K]`` in client-id order, from every process."""
        population, world = self.population, self.population.world
        held = self.strategy.evaluate(population, self.data, round_index, scope)
        shards = [
            b - a for a, b in (world.bounds(population.total_clients, r) for r in range(world.size))
        ]
        return world.gather(held, shards)

    def _mean_grad_norms(self, trace: LocalTrace, participants: int) -> dict[str, float]:
        """Per tensor, the mean over the round's participants of their last-batch grad norm."""
        norms = trace.last_grad_norms
        population = self.population
        world = population.world
        if world.deterministic and world.distributed:  # one process's arithmetic, gathered
            counts = population.participant_counts(torch.zeros(len(trace.clients)))
            norms = {n: world.gather(v, counts) for n, v in norms.items()}
        if not world.distributed or world.deterministic:
            return {n: float(v.mean()) for n, v in norms.items()}
        names = list(population.params)
        local = torch.stack([norms[n].sum() for n in names]) if norms else torch.zeros(len(names))
        totals = world.sum(local.to(self.device)).tolist()
        return {n: v / participants for n, v in zip(names, totals, strict=True)}

    @property
    def test_union(self) -> Tensor:
        """The union of the clients' test splits (computed once)."""
        if self._test_union is None:
            self._test_union = self.data.test_union()
        return self._test_union

    @property
    def parameter_count(self) -> int:
        """Elements of one client's parameters: the denominator of bits per parameter."""
        return sum(t[0].numel() for t in self.population.params.values())

    def global_state(self) -> dict:
        """What is the same on every process: the round, the method's global state, the draw
        generator, the observers."""
        return {
            "next_round": self.next_round,
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "observers": [observer.state_dict() for observer in self.observers],
        }

    def state_dict(self) -> dict:
        """Everything needed to continue bit-exactly after this round (on CPU)."""
        return {**self.global_state(), "population": self.population.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.next_round = state["next_round"]
        self.population.load_state_dict(state["population"])
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
        for observer, observer_state in zip(self.observers, state["observers"], strict=True):
            observer.load_state_dict(observer_state)


def run(federation: Federation, on_round: Sequence[Callable[[RoundRecord], None]] = ()) -> None:
    """Run the remaining rounds, handing every round's record to each callback in turn."""
    while federation.next_round < federation.rounds:
        record = federation.run_round()
        for callback in on_round:
            callback(record)


def check_finite(losses: Tensor, clients: list[int], round_index: int) -> None:
    bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    if bad:
        client = clients[bad[0]]
        raise TrainingDivergedError(
            f"training diverged: loss {float(losses[bad[0]])} on client {client} in round "
            f"{round_index}; lower training.lr or check the data"
        )


def _mean(acc: Tensor | None) -> float | None:
    return None if acc is None else float(acc.mean())


def _listed(acc: Tensor | None) -> list[float] | None:
    return None if acc is None else [round(float(a), 4) for a in acc]
