"""The ``vectorized`` strategy: a chunk of clients trained as one batched computation.

Why: on a GPU, training 100 small models one after another is bound by kernel launches and
Python, not arithmetic (REFERENCE.md §8.3). Here the clients' stacked parameters ``[k, *shape]``
are themselves the leaves of autograd; one ``torch.func.vmap`` over ``functional_call`` runs the
k models on their own batches ``[k, B, ...]`` (a convolution becomes one grouped convolution;
BatchNorm normalises with, and updates, each client's own statistics, since the running
statistics are batched too); the loss is the sum of the clients' mean cross-entropies, so each
slice of the gradient is exactly that client's gradient; and the very ``sgd_step`` of the
sequential strategy updates the stacked tensors, momentum per client because it is stacked.

**Same numbers as ``sequential``** (up to float rounding), by this RNG contract: before training,
the round's random draws are taken from the run's generator in exactly the sequential order —
client by client (in ``clients`` order), phase by phase, epoch by epoch: the epoch's permutation
(``randperm(n)``), then for each mini-batch of that permutation the augmentation draws in the
pipeline's own order (flips, angles, crop offsets). Nothing else touches the generator during
training (hooks get none), so drawing ahead gives every client the same batches and the same
augmentation as in the sequential strategy, and leaves the generator in the same state. Only
then are the draws applied, all clients at once. A transform that is not a
``fedlab_cli.data.augment.Pipeline`` cannot be drawn ahead: such runs train sequentially.

**Method hooks** keep their per-client meaning: ``local_phases`` is the same for every client;
``extra_loss`` and ``after_local_step``, when a method overrides them, are called once per client
and step on that client's slices (``inputs[i]``, ``logits[i]``; views of its parameters and
momentum, which the hook updates in place as in the sequential strategy). Only the order of those
calls differs (step by step across clients rather than client by client), so hooks must keep
per-client state, as every fedlab method does. Hook-heavy methods (pFedSD's teacher forward) lose
part of the speed-up, not correctness. ``wants_last_gradients`` gets the stacked last-step
gradients.

**Memory**: clients are trained and evaluated in chunks of ``chunk_size`` (``engine.chunk_size``),
by default sized from free device memory and a per-client estimate (parameters, gradients,
momentum and the activations of one batch). State is written back to the population only when a
chunk finishes, and the draws are made up front, so a chunk that runs out of memory is simply
redone in halves with identical results (hooks of the failed attempt may have run once more).

**Hot path**: data stay on the device as uint8, batches are index gathers, augmentation runs on
the whole chunk's batch at once, and nothing in a round reads a value back to the host.
``autocast: bf16`` runs every forward pass, the method hooks' included, at the precision that
``fedlab_cli.engine.precision`` describes.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedlab_cli.data.augment import Pipeline
from fedlab_cli.engine.client_data import ClientData
from fedlab_cli.engine.method import LocalTrace, Method, Phase
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.precision import Precision
from fedlab_cli.engine.sequential import SequentialStrategy
from fedlab_cli.engine.sgd import sgd_step
from fedlab_cli.spec.model import TrainingSpec

EVAL_PIECE = 4
"""Test samples per client per batched evaluation forward, in training batches (no autograd)."""
MEMORY_SHARE = 0.6
"""Share of the free memory a chunk may plan to use (the estimate is rough; OOM halves it)."""
ACTIVATION_FACTOR = 4
"""Floats a training step keeps per value a layer outputs: the saved input, its gradient and
the layout copies a grouped convolution makes."""


class VectorizedStrategy:
    """Local training and evaluation of many clients at once, in chunks."""

    name = "vectorized"

    def __init__(
        self,
        model: nn.Module,
        training: TrainingSpec,
        device: torch.device,
        chunk_size: int | None = None,
        precision: Precision | None = None,
        free_memory: Callable[[], int] | None = None,
    ) -> None:
        self.model = model
        self.training = training
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.free_memory = free_memory or (lambda: free_memory_bytes(self.device))
        self.auto_chunk: int | None = None  # sized once, on first use
        self.cap: int | None = None  # lowered when a chunk ran out of memory
        self.precision = precision or Precision(model)
        self.sequential = SequentialStrategy(model, training, self.precision)

    # -- forward passes --------------------------------------------------------------------

    def forward(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        *,
        train: bool | None = None,
    ) -> Tensor:
        """One client's model on its tensors, as the sequential strategy's (for method hooks)."""
        return self.sequential.forward(params, buffers, x, train=train)

    def forward_batched(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor
    ) -> Tensor:
        """k models on their own inputs: ``[k, *shape]`` tensors, ``x`` ``[k, B, ...]``."""
        return self.precision.run_batched(params, buffers, x)

    # -- training --------------------------------------------------------------------------

    def train(
        self,
        population: Population,
        clients: list[int],
        data: ClientData,
        generator: torch.Generator,
        method: Method,
        round_index: int,
    ) -> LocalTrace:
        """Train the listed clients in place, chunk by chunk, as the method's phases say."""
        if not isinstance(data.train_transform, Pipeline):
            return self.sequential.train(population, clients, data, generator, method, round_index)
        phases = method.local_phases(round_index, self.training.local_epochs)
        epochs = sum(phase.epochs for phase in phases)
        n = data.train_idx.shape[1]
        batch_size, device = self.training.batch_size, data.train_idx.device
        plan = draw_plan(
            len(clients), n, epochs, batch_size, data.train_transform, generator, device
        )
        index = population.index(clients)
        self.precision.train(True)
        results = self._chunked(
            len(clients),
            data,
            lambda lo, hi: self._train_chunk(
                population, clients[lo:hi], index[lo:hi], plan.rows(lo, hi), data, method, phases
            ),
        )
        names = list(population.params)
        return LocalTrace(
            clients=list(clients),
            losses=torch.cat([r.losses for r in results]),
            last_grad_norms={n: torch.cat([r.norms[n] for r in results]) for n in names},
            last_grads={n: torch.cat([r.grads[n] for r in results]) for n in names}
            if method.wants_last_gradients
            else None,
        )

    def _train_chunk(
        self,
        population: Population,
        clients: list[int],
        index: Tensor,
        plan: Plan,
        data: ClientData,
        method: Method,
        phases: list[Phase],
    ) -> ChunkResult:
        cfg = self.training
        params = {n: t.index_select(0, index) for n, t in population.params.items()}
        buffers = {n: t.index_select(0, index) for n, t in population.buffers.items()}
        own = data.train_idx.index_select(0, index)
        images, labels = data.dataset.train_images, data.dataset.train_labels
        hooks = Hooks.of(method)
        momentum: dict[str, Tensor] = {}
        losses: list[Tensor] = []
        last: dict[str, Tensor] = {}
        epoch = 0
        for phase in phases:
            trainable = [n for n in params if phase.trains(n, population.roles[n])]
            for n, p in params.items():
                p.requires_grad_(n in trainable)
            for _ in range(phase.epochs):
                for lo, hi in batch_bounds(own.shape[1], cfg.batch_size):
                    batch = own.gather(1, plan.order[:, epoch, lo:hi])  # [k, b] pool positions
                    x = plan.augment(data.train_transform, images, batch, epoch, lo, hi)
                    loss = self._loss(params, buffers, x, labels[batch], clients, method, hooks)
                    grads = torch.autograd.grad(loss.sum(), [params[n] for n in trainable])
                    last = dict(zip(trainable, grads, strict=True))
                    sgd_step(params, last, momentum, cfg.lr, cfg.momentum, cfg.weight_decay)
                    if hooks.step:
                        with torch.no_grad():
                            for i, c in enumerate(clients):
                                method.after_local_step(
                                    c,
                                    {n: p[i] for n, p in params.items()},
                                    {n: m[i] for n, m in momentum.items()},
                                )
                    losses.append(loss.detach())
                epoch += 1
        with torch.no_grad():
            for n, t in population.params.items():
                t.index_copy_(0, index, params[n].detach())
            for n, t in population.buffers.items():
                t.index_copy_(0, index, buffers[n])
        full = {n: last.get(n, torch.zeros_like(p)) for n, p in params.items()}
        return ChunkResult(
            losses=torch.stack(losses).mean(0)
            if losses
            else torch.zeros(len(clients), device=index.device),
            norms={n: g.flatten(1).norm(dim=1) for n, g in full.items()},
            grads=full if method.wants_last_gradients else {},
        )

    def _loss(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        clients: list[int],
        method: Method,
        hooks: Hooks,
    ) -> Tensor:
        """Each client's loss ``[k]``: its mean cross-entropy plus the method's extra term."""
        logits = self.forward_batched(params, buffers, x)  # [k, b, classes], float32
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        loss = ce.view(len(clients), -1).mean(1)
        if hooks.loss:
            zero = loss.new_zeros(())
            extras = [
                method.extra_loss(c, x[i], logits[i], self.forward) for i, c in enumerate(clients)
            ]
            if any(e is not None for e in extras):
                loss = loss + torch.stack([zero if e is None else e for e in extras])
        return loss

    # -- evaluation ------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, population: Population, data: ClientData) -> Tensor:
        """Each client's accuracy (%) on its own test split, chunks of clients at once."""
        self.precision.train(False)
        hits = self._chunked(
            population.num_clients, data, lambda lo, hi: self._correct(population, data, lo, hi)
        )
        return 100.0 * torch.cat(hits).double() / data.test_idx.shape[1]

    def _correct(self, population: Population, data: ClientData, lo: int, hi: int) -> Tensor:
        params = {n: t[lo:hi] for n, t in population.params.items()}
        buffers = {n: t[lo:hi] for n, t in population.buffers.items()}
        images, labels = data.dataset.test_images, data.dataset.test_labels
        own = data.test_idx[lo:hi]
        correct = torch.zeros(hi - lo, dtype=torch.long, device=own.device)
        piece = EVAL_PIECE * self.training.batch_size
        for start in range(0, own.shape[1], piece):
            batch = own[:, start : start + piece]
            x = data.test_transform(images[batch.flatten()], None)
            logits = self.forward_batched(params, buffers, x.view(*batch.shape, *x.shape[1:]))
            correct += (logits.argmax(-1) == labels[batch]).sum(1)
        return correct

    # -- chunks ----------------------------------------------------------------------------

    def _chunked(self, count: int, data: ClientData, work: Callable[[int, int], object]) -> list:
        """``work(lo, hi)`` over chunks of ``count`` clients; a chunk out of memory is halved."""
        results, lo = [], 0
        size = self.chunk_for(count, data)
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

    def chunk_for(self, count: int, data: ClientData) -> int:
        """Clients per chunk: ``chunk_size``, else what the free memory holds (sized once)."""
        size = self.chunk_size
        if size is None:
            if self.auto_chunk is None:
                need = client_bytes(self.model, data.dataset.image_shape, self.training.batch_size)
                self.auto_chunk = max(1, int(self.free_memory() * MEMORY_SHARE) // need)
            size = self.auto_chunk
        return max(1, min(size, count, self.cap or count))


@dataclass(frozen=True)
class Hooks:
    """Which per-client hooks a method overrides (the base ones do nothing)."""

    loss: bool
    step: bool

    @classmethod
    def of(cls, method: Method) -> Hooks:
        kind = type(method)
        return cls(
            loss=kind.extra_loss is not Method.extra_loss,
            step=method.hooks_local_steps,
        )


@dataclass
class ChunkResult:
    losses: Tensor  # [k]
    norms: dict[str, Tensor]  # [k] per parameter
    grads: dict[str, Tensor]  # [k, *shape] per parameter, when the method wants them


@dataclass
class Plan:
    """A round's random draws, made ahead in the sequential order (module docstring).

    ``order[i, e]`` is client i's permutation of its samples in epoch e; ``draws[j][i, e, s]``
    is the pipeline's j-th per-sample draw for the sample at position s of that epoch's order.
    """

    order: Tensor  # [k, epochs, n]
    draws: list[Tensor]  # each [k, epochs, n]

    def rows(self, lo: int, hi: int) -> Plan:
        return Plan(self.order[lo:hi], [d[lo:hi] for d in self.draws])

    def augment(
        self, pipeline: Pipeline, images: Tensor, batch: Tensor, epoch: int, lo: int, hi: int
    ) -> Tensor:
        """The chunk's augmented batch ``[k, b, C, H, W]`` for positions ``lo:hi`` of ``epoch``."""
        draws = [d[:, epoch, lo:hi].flatten() for d in self.draws]
        x = pipeline.apply(images[batch.flatten()], draws)
        return x.view(*batch.shape, *x.shape[1:])


def draw_plan(
    clients: int,
    n: int,
    epochs: int,
    batch_size: int,
    pipeline: Pipeline,
    generator: torch.Generator,
    device: torch.device,
) -> Plan:
    """Every draw the sequential strategy makes in a round, in its order, for ``clients``."""
    orders: list[Tensor] = []
    draws: list[list[Tensor]] = []
    for _ in range(clients * epochs):
        orders.append(torch.randperm(n, generator=generator, device=device))
        per_batch = [
            pipeline.draw(hi - lo, generator, device) for lo, hi in batch_bounds(n, batch_size)
        ]
        draws.append([torch.cat(kind) for kind in zip(*per_batch, strict=True)])
    kinds = len(draws[0]) if draws else 0
    return Plan(
        order=torch.stack(orders).view(clients, epochs, n)
        if orders
        else torch.zeros(clients, 0, n, dtype=torch.long, device=device),
        draws=[torch.stack([d[j] for d in draws]).view(clients, epochs, n) for j in range(kinds)],
    )


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each mini-batch of an epoch, as ``Tensor.split(batch_size)`` cuts it."""
    return [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]


def free_memory_bytes(device: torch.device) -> int:
    """Memory a chunk may use: free plus cached-but-unused on CUDA, available RAM on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume plenty
        return 1 << 40


def client_bytes(model: nn.Module, image_shape: tuple[int, ...], batch_size: int) -> int:
    """Rough bytes one client of a training chunk needs (fp32).

    Parameters five times over (the chunk's copy, gradients, momentum, the last gradients kept
    for the trace, an update temporary), its BN buffers, and ``ACTIVATION_FACTOR`` floats per
    value each layer outputs for one batch. Output sizes come from a forward pass on the meta
    device (no memory, no compute).
    """
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    values = ACTIVATION_FACTOR * batch_size * activations(model, image_shape)
    return 4 * (5 * params + buffers + values)


def activations(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Values one sample's forward pass writes, summed over every leaf module's output."""
    probe = copy.deepcopy(model).to("meta").eval()
    total = 0

    def count(module: nn.Module, inputs: object, output: Tensor) -> None:
        nonlocal total
        total += output.numel()

    for module in probe.modules():
        if not list(module.children()):
            module.register_forward_hook(count)
    with torch.no_grad():
        probe(torch.empty(1, *image_shape, device="meta"))
    return total + int(torch.Size(image_shape).numel())
