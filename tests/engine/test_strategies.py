"""Both strategies run the one training core: same numbers, hooks, RNG use; chunks and memory."""

import copy

import pytest
import torch
import torch.nn.functional as F
from support import fail_chunks_above
from torch import nn

from fedlab_cli.data.augment import test_transform, train_transform
from fedlab_cli.data.partition import split_clients
from fedlab_cli.data.synthetic import make_synthetic
from fedlab_cli.engine.client_data import ClientData
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.forward import PlainForward
from fedlab_cli.engine.memory import (
    ACTIVATION_FACTOR,
    MEMORY_SHARE,
    client_bytes,
    free_memory_bytes,
)
from fedlab_cli.engine.method import Method, Phase
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.precision import Precision
from fedlab_cli.engine.session import RunSession
from fedlab_cli.engine.strategies import (
    CPU_BATCHING_MAX_FLOPS,
    SequentialStrategy,
    VectorizedStrategy,
    configure_tf32,
    make_strategy,
    resolve_layout,
    resolve_strategy,
)
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build
from fedlab_cli.models.flops import forward_flops
from fedlab_cli.spec.model import EngineSpec, TrainingSpec

CLIENTS = 5
CPU = torch.device("cpu")
TRAINING = TrainingSpec(local_epochs=2, batch_size=10, lr=0.05, momentum=0.9, weight_decay=1e-3)


@pytest.fixture(scope="module")
def pools():
    """Small 3x16x16 pools and a partition: 24 train samples (batches 10, 10, 4), 12 test."""
    ds = make_synthetic("unit", (3, 16, 16), 4, 120, 60, seed=1)
    splits = split_clients(ds.train_labels.numpy(), ds.test_labels.numpy(), CLIENTS, 0.5, 24, 12, 0)
    return ds, splits


def client_data(pools, augment="cifar100"):
    ds, splits = pools
    return ClientData.build(
        ds, splits, CPU, train_transform(augment, True), test_transform(augment)
    )


def fresh_model():
    torch.manual_seed(0)
    return build("small_cnn", 4, in_channels=3)


def population(model):
    """Clients that differ from each other (a fresh population is all copies of one model)."""
    torch.manual_seed(5)
    pop = Population.replicate(model, CLIENTS, CPU)
    for t in pop.params.values():
        t.add_(0.05 * torch.randn_like(t))
    return pop


def train_both(pools, method, clients=None, augment="cifar100", autocast="none", **vectorized):
    """The same round from the same state and generator seed, trained both ways."""
    model = fresh_model()
    data = client_data(pools, augment)
    clients = list(range(CLIENTS)) if clients is None else clients
    out = []
    for strategy in (
        SequentialStrategy(model, TRAINING, Precision(model, autocast)),
        VectorizedStrategy(
            model,
            TRAINING,
            CPU,
            precision=Precision(model, autocast),
            image_shape=(3, 16, 16),
            **vectorized,
        ),
    ):
        pop = population(model)
        gen = torch.Generator().manual_seed(3)
        trace = strategy.train(pop, clients, data, gen, copy.deepcopy(method), round_index=0)
        out.append((pop, trace, gen, strategy.evaluate(pop, data)))
    return out


def assert_same_round(seq, vec, grads=False):
    (pop_s, trace_s, gen_s, acc_s), (pop_v, trace_v, gen_v, acc_v) = seq, vec
    assert torch.equal(gen_s.get_state(), gen_v.get_state())  # same draws, same count
    for name, tensor in pop_s.tensors().items():
        torch.testing.assert_close(pop_v.tensors()[name], tensor, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trace_v.losses, trace_s.losses, rtol=1e-5, atol=1e-6)
    for name, norm in trace_s.last_grad_norms.items():
        torch.testing.assert_close(trace_v.last_grad_norms[name], norm, rtol=1e-4, atol=1e-6)
    if grads:
        for name, grad in trace_s.last_grads.items():
            torch.testing.assert_close(trace_v.last_grads[name], grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(acc_v, acc_s)


class WantsGradients(Method):
    wants_last_gradients = True


@pytest.mark.parametrize("augment", ["cifar100", "tinyimagenet", "cifar10"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_a_round_equals_sequential(pools, augment, chunk_size):
    """Parameters, BN statistics (num_batches_tracked too), losses, last gradients and
    accuracies, with flips, rotations and crops drawn per sample, an uneven last batch,
    momentum and weight decay; chunks of 2 of 5 clients change nothing."""
    method = WantsGradients(Method.Params())
    seq, vec = train_both(pools, method, augment=augment, chunk_size=chunk_size)
    assert_same_round(seq, vec, grads=True)
    # the round really trained: every client moved, BN counted 2 epochs x 3 batches
    start = population(fresh_model()).params["features.0.weight"]
    moved = (vec[0].params["features.0.weight"] - start).flatten(1).abs().amax(1)
    assert (moved > 1e-4).all()
    assert torch.equal(vec[0].buffers["features.1.num_batches_tracked"], torch.full((5,), 6))


def test_a_subset_of_clients_in_chunks(pools):
    """Participants 1, 3, 4 train; 0 and 2 stay as they were."""
    seq, vec = train_both(pools, WantsGradients(Method.Params()), clients=[1, 3, 4], chunk_size=2)
    assert_same_round(seq, vec, grads=True)
    assert vec[1].clients == [1, 3, 4] and vec[1].last_grads["classifier.weight"].shape[0] == 3
    untouched = population(fresh_model())
    for name, tensor in untouched.params.items():
        assert torch.equal(vec[0].params[name][[0, 2]], tensor[[0, 2]]), name


class HookedMethod(Method):
    """Every block hook at once: head-then-body phases, a client-dependent extra loss (none for
    client 0), a gradient transform, and a per-client mask re-applied after each step — all on
    ``[k, ...]`` tensors, with no loop over the block's clients."""

    wants_last_gradients = True

    def __init__(self, params):
        super().__init__(params)
        self.calls = {"loss": [], "grads": [], "step": []}

    def local_phases(self, round_index, local_epochs):
        return [Phase(1, lambda n, r: r.is_head), Phase(1, lambda n, r: not r.is_head)]

    def extra_loss(self, block, params, inputs, logits):
        self.calls["loss"] += block.clients
        clients = torch.tensor(block.clients, dtype=torch.float32)
        weight = torch.where(clients == 0, 0.0, 0.01 * (clients + 1))
        return weight * logits.pow(2).flatten(1).mean(1)

    def transform_gradients(self, block, params, grads):
        self.calls["grads"] += block.clients
        if "classifier.bias" in grads:
            grads["classifier.bias"].mul_(0.5)

    def after_step(self, block, params, optimizer_state):
        self.calls["step"] += block.clients
        rows = torch.arange(len(block.clients))
        channels = torch.tensor(block.clients) % 3
        params["features.0.weight"][rows, channels] = 0
        buffers = optimizer_state.get("features.0.weight", {})
        for slot in buffers.values():
            slot[rows, channels] = 0


def test_hooks_run_per_block_with_sequential_numbers(pools):
    seq, vec = train_both(pools, HookedMethod(Method.Params()), chunk_size=3)
    assert_same_round(seq, vec, grads=True)
    weight = vec[0].params["features.0.weight"]
    for c in range(CLIENTS):
        assert torch.equal(weight[c, c % 3], torch.zeros_like(weight[c, c % 3]))


def test_hook_calls_match_sequential_per_client(pools):
    """Same calls per client (2 epochs x 3 batches = 6 steps), only grouped differently."""
    model = build("small_cnn", 4, in_channels=3)
    data = client_data(pools)
    counts = []
    for strategy in (
        SequentialStrategy(model, TRAINING),
        VectorizedStrategy(model, TRAINING, CPU, image_shape=(3, 16, 16)),
    ):
        method = HookedMethod(Method.Params())
        strategy.train(population(model), [0, 1, 2], data, torch.Generator(), method, 0)
        counts.append({k: sorted(v) for k, v in method.calls.items()})
    expected = sorted([0, 1, 2] * 6)
    assert counts[0] == counts[1] == {"loss": expected, "grads": expected, "step": expected}


def test_out_of_memory_halves_the_chunk_with_the_same_numbers(pools, monkeypatch):
    fail_chunks_above(monkeypatch, 2)
    seq, vec = train_both(pools, WantsGradients(Method.Params()), free_memory=lambda: 1 << 50)
    assert_same_round(seq, vec, grads=True)


def test_chunk_size_from_free_memory():
    """Per-client bytes by hand for conv(1->2, 3x3) -> flatten -> linear(32 -> 3) on 4x4."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(32, 3))
    params = 2 * 9 + 32 * 3 + 3
    values = 32 + 32 + 3 + 16  # conv out, flatten out, logits, the input image
    need = 4 * (5 * params + ACTIVATION_FACTOR * 8 * values)
    assert client_bytes(model, (1, 4, 4), batch_size=8) == need
    free = int(need * 3.5 / MEMORY_SHARE) + 1
    training = TRAINING.model_copy(update={"batch_size": 8})
    strategy = VectorizedStrategy(
        model, training, CPU, free_memory=lambda: free, image_shape=(1, 4, 4)
    )
    assert strategy.chunk_for(10) == 3
    assert strategy.chunk_for(2) == 2
    fixed = VectorizedStrategy(model, TRAINING, CPU, chunk_size=4, free_memory=lambda: 0)
    assert fixed.chunk_for(10) == 4


def test_free_memory_on_cuda_counts_the_allocators_unused_cache(monkeypatch):
    """On CUDA a chunk may use the driver's free memory plus what PyTorch caches but does not
    use (the CUDA calls stubbed: the arithmetic is what runs on a GPU machine)."""
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 6 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * gib)
    assert free_memory_bytes(torch.device("cuda")) == 12 * gib
    assert 0 < free_memory_bytes(CPU) < 1 << 40  # this machine's available RAM


def test_bf16_autocast_both_ways_stays_close_and_is_not_float32(pools):
    """bf16 in both strategies: close to each other, and (being bf16) not the fp32 numbers."""
    seq, vec = train_both(pools, Method(Method.Params()), autocast="bf16")
    fp32, _ = train_both(pools, Method(Method.Params()))
    name = "classifier.weight"
    assert (vec[0].params[name] - seq[0].params[name]).abs().max() < 0.05
    assert (seq[0].params[name] - fp32[0].params[name]).abs().max() > 0
    assert (vec[0].params[name] - fp32[0].params[name]).abs().max() > 0


def run_with(make_spec, tmp_path, strategy, method, rounds=2):
    spec = make_spec(method=method, federation={"rounds": rounds}, engine={"strategy": strategy})
    session = RunSession.start(spec, tmp_path / strategy)
    run(session.federation, on_round=[session.on_round])
    return session


@pytest.mark.parametrize(
    "method",
    [
        {"name": "fedbn"},
        {"name": "lips"},
        {"name": "lips", "sparsity": "persistent"},
        {"name": "fedrep"},
        {"name": "pfedsd"},
        {"name": "fedcac"},
        {"name": "separate"},
    ],
    ids=lambda m: "-".join(map(str, m.values())),
)
def test_runs_equal_sequential(make_spec, tmp_path, method):
    """Whole runs (aggregation, LIPS's sparsification from last gradients and its persistent
    masks re-applied after each step, FedRep's phases, pFedSD's per-client teacher loss,
    FedCAC's critical masks) give the sequential run's metrics and final models."""
    seq = run_with(make_spec, tmp_path, "sequential", method)
    vec = run_with(make_spec, tmp_path, "vectorized", method)
    assert isinstance(vec.federation.strategy, VectorizedStrategy)
    for a, b in zip(seq.records, vec.records, strict=True):
        assert a["acc_local_clients"] == b["acc_local_clients"]
        assert a["acc_agg_clients"] == b["acc_agg_clients"]
        assert abs(a["loss"] - b["loss"]) < 1e-5
    pop_s, pop_v = seq.federation.population, vec.federation.population
    for name, tensor in pop_s.tensors().items():
        torch.testing.assert_close(pop_v.tensors()[name], tensor, rtol=1e-4, atol=1e-5)


def test_auto_strategy_per_device():
    assert resolve_strategy("auto", torch.device("cpu")) == "sequential"
    assert resolve_strategy("auto", torch.device("cpu"), CPU_BATCHING_MAX_FLOPS + 1) == "sequential"
    assert resolve_strategy("auto", torch.device("cpu"), CPU_BATCHING_MAX_FLOPS) == "vectorized"
    assert resolve_strategy("auto", torch.device("cuda")) == "vectorized"
    assert resolve_strategy("vectorized", torch.device("cpu")) == "vectorized"
    model = build("small_cnn", 4, in_channels=3)
    engine = EngineSpec(strategy="vectorized", chunk_size=3, autocast="bf16")
    strategy = make_strategy(engine, model, TRAINING, CPU, (3, 16, 16))
    assert isinstance(strategy, VectorizedStrategy)
    assert (strategy.chunk_size, strategy.precision.autocast) == (3, "bf16")
    assert strategy.precision.channels_last  # auto layout on CPU
    sequential = make_strategy("auto", model, TRAINING, CPU, (3, 16, 16))
    assert isinstance(sequential, SequentialStrategy)
    assert (sequential.precision.autocast, sequential.precision.channels_last) == ("none", True)
    contiguous = make_strategy(EngineSpec(layout="contiguous"), model, TRAINING, CPU, (3, 16, 16))
    assert not contiguous.precision.channels_last
    assert resolve_layout("auto", torch.device("cuda")) is False
    assert resolve_layout("channels_last", torch.device("cuda")) is True


def test_auto_batches_only_tiny_models_on_cpu():
    """The digits quickstart's CNN (8x8 inputs: 1.2 MFLOP a sample) is batched, ResNet8 not."""
    digits_cnn = build("small_cnn", 10, in_channels=1)
    flops = forward_flops(digits_cnn, (1, 8, 8))
    tiny = make_strategy("auto", digits_cnn, TRAINING, CPU, (1, 8, 8), flops)
    assert isinstance(tiny, VectorizedStrategy)
    resnet = build("resnet8", 100, in_channels=3)
    flops = forward_flops(resnet, (3, 32, 32))
    big = make_strategy("auto", resnet, TRAINING, CPU, (3, 32, 32), flops)
    assert isinstance(big, SequentialStrategy)


def test_tf32_flags_follow_the_spec_on_cuda_only():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        configure_tf32(True, torch.device("cuda"))
        assert matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        configure_tf32(False, torch.device("cpu"))  # CPU runs leave the flags alone
        assert matmul.fp32_precision == "tf32"
        configure_tf32(False, torch.device("cuda"))
        assert matmul.fp32_precision == "ieee"
    finally:
        matmul.fp32_precision = before
        torch.backends.cudnn.conv.fp32_precision = "tf32"


@pytest.mark.parametrize(
    "override, message",
    [
        ("engine.chunk_size=0", "engine.chunk_size: Input should be greater than or equal to 1"),
        ("engine.autocast=fp16", "engine.autocast: Input should be 'none' or 'bf16'"),
        ("engine.strategy=gpu", "engine.strategy: Input should be 'auto', 'sequential' or"),
        ("engine.layout=nhwc", "engine.layout: Input should be 'auto', 'channels_last' or"),
    ],
)
def test_engine_knobs_are_validated(make_spec, override, message):
    with pytest.raises(FedlabError, match=message):
        make_spec(overrides=[override])


def test_loss_is_each_clients_own_mean_cross_entropy(pools):
    """One step by hand for client 1 of a batched step, with the vectorized forward."""
    model = build("small_cnn", 4, in_channels=3)
    strategy = VectorizedStrategy(model, TRAINING, CPU)
    pop = population(model)
    x, y = torch.rand(CLIENTS, 6, 3, 16, 16), torch.randint(0, 4, (CLIENTS, 6))
    model.train()
    params = {n: t.clone().requires_grad_(True) for n, t in pop.params.items()}
    buffers = {n: t.clone() for n, t in pop.buffers.items()}
    logits = strategy.forward(params, buffers, x)
    loss = strategy.forward.losses(logits, y)
    grad = torch.autograd.grad(loss.sum(), params["classifier.weight"])[0]
    single = {n: t[1:2].clone().requires_grad_(True) for n, t in pop.params.items()}
    single_buffers = {n: t[1:2].clone() for n, t in pop.buffers.items()}
    plain = PlainForward(strategy.precision)
    own = F.cross_entropy(plain(single, single_buffers, x[1:2])[0], y[1])
    expected = torch.autograd.grad(own, single["classifier.weight"])[0][0]
    torch.testing.assert_close(grad[1], expected, rtol=1e-5, atol=1e-7)
