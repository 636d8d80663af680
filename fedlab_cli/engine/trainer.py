"""The one local-training core: blocks of k clients, the same code for every strategy.

A round's participants are grouped by dataset size (one step schedule per group) and cut into
blocks (one client each in the ``sequential`` strategy, memory-sized chunks in ``vectorized``).
A block runs, on its ``[k, ...]`` slices of the population:

    draw plan → forward → loss (+ method term) → gradients → method gradient transform →
    clip → optimizer step → method after-step

and only when the whole block has succeeded is its state — parameters, buffers, optimizer
state, the method's declared client state — written back. A block that runs out of memory is
redone in halves from the unchanged population with the same draws: identical results, and no
hook side effect counted twice. Evaluation follows the same blocks: each client's model on its
own test split, in test batches of ``eval.batch_size`` (the same in both strategies, so a
stochastic model sees the same masks either way).

Everything random comes from the round's draw plan (``plan.py``) and the counter-based noise
streams (``fedlab_cli.models.noise``), so no strategy, chunk size or grouping changes a number
beyond float rounding, and the sequential strategy reproduces one model's arithmetic exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from fedlab_cli.engine.client_data import ClientData, groups_by_size
from fedlab_cli.engine.forward import Forward, PlainForward
from fedlab_cli.engine.method import Block, LocalTrace, Method, Phase, overrides
from fedlab_cli.engine.optim import clip_grad_norms, make_optimizer
from fedlab_cli.engine.plan import BlockPlan, batch_bounds, draw_plan
from fedlab_cli.engine.population import Population, to_device
from fedlab_cli.engine.schedule import round_lr
from fedlab_cli.models import noise
from fedlab_cli.spec.model import TrainingSpec

EVAL_PIECE = 4
"""Default test batch: this many training batches (no autograd, so about the same memory)."""

TRAIN, EVALUATE, CALIBRATE = 1, 2, 3
"""Purposes of a forward pass, part of its noise tag: they never share random numbers."""


@dataclass(frozen=True)
class Hooks:
    """Which block hooks a method overrides (the engine skips the others)."""

    loss: bool
    grads: bool
    step: bool

    @classmethod
    def of(cls, method: Method) -> Hooks:
        return cls(
            overrides(method, "extra_loss"),
            overrides(method, "transform_gradients"),
            overrides(method, "after_step"),
        )


@dataclass
class BlockResult:
    positions: list[int]
    losses: Tensor  # [k]
    norms: dict[str, Tensor]  # [k] per parameter
    grads: dict[str, Tensor]  # [k, *shape] per parameter, when the method wants them
    steps: int


class Chunks:
    """Clients per block, and running work over blocks with out-of-memory halving."""

    def __init__(self, size: Callable[[int], int], device: torch.device) -> None:
        self.size = size
        self.device = device
        self.cap: int | None = None  # lowered when a block ran out of memory

    def limit(self, count: int) -> int:
        return max(1, min(self.size(count), count, self.cap or count))

    def run(self, count: int, work: Callable[[int, int], object]) -> list:
        """``work(lo, hi)`` over blocks of ``count`` items; a block out of memory is halved."""
        results, lo = [], 0
        size = self.limit(count)
        while lo < count:
            hi = min(count, lo + size)
            try:
                results.append(work(lo, hi))
            except torch.OutOfMemoryError:
                if hi - lo == 1:
                    raise
                size = self.cap = (hi - lo + 1) // 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            lo = hi
        return results


class LocalTrainer:
    """Local training and evaluation of the population with one forward and one block size."""

    name = "trainer"

    def __init__(
        self,
        forward: Forward,
        training: TrainingSpec,
        chunks: Chunks,
        seed: int = 0,
        stochastic: bool = False,
        eval_batch: int | None = None,
    ) -> None:
        self.forward = forward
        self.plain = PlainForward(forward.precision)
        self.precision = forward.precision
        self.model = forward.precision.original
        self.training = training
        self.optimizer = make_optimizer(training)
        self.chunks = chunks
        self.seed = seed
        self.stochastic = stochastic
        self.eval_batch = eval_batch or EVAL_PIECE * training.batch_size

    def one_model(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        *,
        train: bool | None = None,
    ) -> Tensor:
        """One model on unstacked tensors and a batch ``[b, C, H, W]``: logits ``[b, classes]``."""
        stacked = {n: t.unsqueeze(0) for n, t in params.items()}
        stats = {n: t.unsqueeze(0) for n, t in buffers.items()}
        return self.plain(stacked, stats, x.unsqueeze(0), train=train)[0]

    # -- noise -------------------------------------------------------------------------------

    def keys(self, clients: list[int], device: torch.device) -> Tensor | None:
        """The clients' noise-stream keys (None for a deterministic model: no streams)."""
        if not self.stochastic:
            return None
        host = torch.tensor([noise.client_key(self.seed, c) for c in clients], dtype=torch.long)
        return host.to(device)

    @contextmanager
    def noise(self, keys: Tensor | None, *tag: int) -> Iterator[None]:
        """The streams of one forward pass, named by ``tag`` (purpose, round, step, ...)."""
        if keys is None:
            yield
            return
        with noise.stream(keys, noise.mix64(*tag)):
            yield

    # -- training ----------------------------------------------------------------------------

    def train(
        self,
        population: Population,
        clients: list[int],
        data: ClientData,
        generator: torch.Generator,
        method: Method,
        round_index: int,
        everyone: list[int] | None = None,
    ) -> LocalTrace:
        """Train the listed clients in place, block by block, as the method's phases say.

        ``everyone`` is the round's participants on every process (default: ``clients``):
        the round's draws are made for all of them, in order, so a client gets the same
        batches wherever it is trained and every process's generator stays in step."""
        everyone = clients if everyone is None else everyone
        phases = method.local_phases(round_index, self.training.local_epochs)
        epochs = sum(phase.epochs for phase in phases)
        sizes = [data.train_sizes[c] for c in everyone]
        device = data.train_idx.device
        plan = draw_plan(
            sizes, epochs, self.training.batch_size, data.train_transform, generator, device
        )
        in_plan = {c: i for i, c in enumerate(everyone)}
        hooks = Hooks.of(method)
        self.precision.train(True)
        results: list[BlockResult] = []
        for group in groups_by_size(clients, data.train_sizes):
            results += self.chunks.run(
                len(group),
                lambda lo, hi, g=group: self._train_block(
                    population,
                    clients,
                    g[lo:hi],
                    plan.rows([in_plan[clients[p]] for p in g[lo:hi]]),
                    data,
                    method,
                    phases,
                    round_index,
                    hooks,
                ),
            )
        return _trace(clients, results, population, method.wants_last_gradients)

    def _train_block(
        self,
        population: Population,
        clients: list[int],
        positions: list[int],
        plan: BlockPlan,
        data: ClientData,
        method: Method,
        phases: list[Phase],
        round_index: int,
        hooks: Hooks,
    ) -> BlockResult:
        cfg = self.training
        members = [clients[p] for p in positions]
        rows = population.index(members)
        params = {n: t.index_select(0, rows) for n, t in population.params.items()}
        buffers = {n: t.index_select(0, rows) for n, t in population.buffers.items()}
        state = {n: t.index_select(0, rows) for n, t in population.state.items()}
        keep = cfg.optimizer_state == "keep"
        opt_state = self.optimizer.init(params)
        if keep:
            for name, slots in population.optimizer.items():
                for slot, stacked in slots.items():
                    opt_state[name][slot] = stacked.index_select(0, rows)
        done = [0] * len(members)  # each client's steps before this round
        if keep:
            done = [population.optimizer_steps[c - population.first] for c in members]
        block = Block(members, rows, round_index, state, self.forward)
        n = data.train_sizes[members[0]]
        own = data.train_idx.index_select(0, to_device(members, rows.device))[:, :n]
        images, labels = data.dataset.train_images, data.dataset.train_labels
        device = own.device
        keys = self.keys(members, device)
        losses: list[Tensor] = []
        last: dict[str, Tensor] = {}
        epoch = step = 0
        for phase in phases:
            trainable = [name for name in params if phase.trains(name, population.roles[name])]
            for name, p in params.items():
                p.requires_grad_(name in trainable)
            for _ in range(phase.epochs):
                lr = round_lr(cfg, round_index, epoch)
                for lo, hi in batch_bounds(n, cfg.batch_size):
                    batch = own.gather(1, plan.order[:, epoch, lo:hi])  # [k, b] pool positions
                    x = plan.augment(data.train_transform, images, batch, epoch, lo, hi)
                    with self.noise(keys, TRAIN, round_index, step):
                        logits = self.forward(params, buffers, x)
                        loss = self.forward.losses(logits, labels[batch])
                        if hooks.loss:
                            extra = method.extra_loss(block, params, x, logits)
                            if extra is not None:
                                loss = loss + extra
                    grads = torch.autograd.grad(loss.sum(), [params[t] for t in trainable])
                    last = dict(zip(trainable, grads, strict=True))
                    if hooks.grads:
                        method.transform_gradients(block, params, last)
                    if cfg.grad_clip is not None:
                        clip_grad_norms(last, cfg.grad_clip)
                    step += 1
                    self.optimizer.step(params, last, opt_state, lr, [d + step for d in done])
                    if hooks.step:
                        with torch.no_grad():
                            method.after_step(block, params, opt_state)
                    losses.append(loss.detach())
                epoch += 1
        self._commit(population, rows, members, params, buffers, state, opt_state, step, keep)
        full = {name: last.get(name, torch.zeros_like(p)) for name, p in params.items()}
        return BlockResult(
            positions=positions,
            losses=torch.stack(losses).mean(0)
            if losses
            else torch.zeros(len(members), device=device),
            norms={name: self.forward.norms(g) for name, g in full.items()},
            grads=full if method.wants_last_gradients else {},
            steps=step,
        )

    @torch.no_grad()
    def _commit(self, population, rows, members, params, buffers, state, opt_state, steps, keep):
        """Write a finished block back into the population (the only write training makes)."""
        for group, values in (
            (population.params, params),
            (population.buffers, buffers),
            (population.state, state),
        ):
            for name, stacked in group.items():
                stacked.index_copy_(0, rows, values[name].detach())
        if not keep:
            return
        for name, slots in opt_state.items():
            stored = population.optimizer.setdefault(name, {})
            for slot, value in slots.items():
                if slot not in stored:
                    stored[slot] = torch.zeros(
                        population.num_clients,
                        *value.shape[1:],
                        dtype=value.dtype,
                        device=value.device,
                    )
                stored[slot].index_copy_(0, rows, value)
        for c in members:
            population.optimizer_steps[c - population.first] += steps

    # -- evaluation --------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(
        self, population: Population, data: ClientData, round_index: int = 0, scope: int = 0
    ) -> Tensor:
        """Each held client's accuracy (%) on its own test split, with its own model, ``[C]``
        (in the order of ``population.clients``)."""
        self.precision.train(False)
        clients = population.clients
        device = data.test_idx.device
        correct = torch.zeros(len(clients), dtype=torch.long, device=device)
        for group in groups_by_size(clients, data.test_sizes):
            hits = self.chunks.run(
                len(group),
                lambda lo, hi, g=group: self._correct(
                    population, data, [clients[p] for p in g[lo:hi]], round_index, scope
                ),
            )
            correct.index_copy_(0, to_device(group, device), torch.cat(hits))
        sizes = data.test_counts[population.first : population.first + len(clients)]
        return 100.0 * correct.double() / sizes.clamp_min(1)

    def _correct(self, population, data, members, round_index, scope) -> Tensor:
        contiguous = members == list(range(members[0], members[0] + len(members)))
        if contiguous:  # views, no copy (the common case: all clients, in order)
            lo, hi = members[0], members[0] + len(members)
            rows = slice(lo - population.first, hi - population.first)
            params = {n: t[rows] for n, t in population.params.items()}
            buffers = {n: t[rows] for n, t in population.buffers.items()}
            own = data.test_idx[lo:hi]
        else:
            rows = population.index(members)
            params = {n: t.index_select(0, rows) for n, t in population.params.items()}
            buffers = {n: t.index_select(0, rows) for n, t in population.buffers.items()}
            own = data.test_idx.index_select(0, to_device(members, rows.device))
        own = own[:, : data.test_sizes[members[0]]]
        return self._count(self.forward, params, buffers, own, data, members, round_index, scope)

    def _count(self, forward, params, buffers, own, data, members, round_index, scope) -> Tensor:
        images, labels = data.dataset.test_images, data.dataset.test_labels
        correct = torch.zeros(own.shape[0], dtype=torch.long, device=own.device)
        keys = self.keys(members, own.device)
        for piece, start in enumerate(range(0, own.shape[1], self.eval_batch)):
            batch = own[:, start : start + self.eval_batch]
            x = data.test_transform(images[batch.flatten()], None)
            with self.noise(keys, EVALUATE, round_index, scope, piece):
                logits = forward(params, buffers, x.view(*batch.shape, *x.shape[1:]))
            correct += (logits.argmax(-1) == labels[batch]).sum(1)
        return correct

    @torch.no_grad()
    def evaluate_model(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        data: ClientData,
        positions: Tensor,
        round_index: int = 0,
        scope: int = -1,
    ) -> float:
        """Accuracy (%) of one model (unstacked tensors) on these test-pool positions; ``scope``
        names the evaluation in its noise tag (the global model's is -1, its variants below)."""
        self.precision.train(False)
        stacked = {n: t.unsqueeze(0) for n, t in params.items()}
        stats = {n: t.unsqueeze(0) for n, t in buffers.items()}
        correct = self._count(
            self.plain, stacked, stats, positions.view(1, -1), data, [-1], round_index, scope
        )
        return 100.0 * float(correct.sum()) / max(1, positions.numel())


def _trace(
    clients: list[int],
    results: list[BlockResult],
    population: Population,
    wants_grads: bool,
) -> LocalTrace:
    """The blocks' results, put back in ``clients`` order (empty tensors for no clients)."""
    names = list(population.params)
    if not results:
        empty = torch.zeros(0, device=population.device)
        return LocalTrace(
            clients=[],
            losses=empty,
            last_grad_norms={n: empty for n in names},
            last_grads={n: population.params[n][:0] for n in names} if wants_grads else None,
            steps=[],
        )
    order = [p for r in results for p in r.positions]
    in_order = order == sorted(order)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    inverse = inverse.to(results[0].losses.device)

    def gather(parts: list[Tensor]) -> Tensor:
        joined = torch.cat(parts)
        return joined if in_order else joined.index_select(0, inverse)

    steps = [0] * len(clients)
    for r in results:
        for p in r.positions:
            steps[p] = r.steps
    return LocalTrace(
        clients=list(clients),
        losses=gather([r.losses for r in results]),
        last_grad_norms={n: gather([r.norms[n] for r in results]) for n in names},
        last_grads={n: gather([r.grads[n] for r in results]) for n in names}
        if wants_grads
        else None,
        steps=steps,
    )
