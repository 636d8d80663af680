"""The composition root: a spec becomes a runnable ``Federation``, top-down, in one place.

data → partition → model (→ the method's transform, → ``model.init``) → population → method →
strategy → calibration. ``fedlab run``, ``fedlab compare``, ``--resume`` and the benchmarks all
build through ``build_federation``; ``Federation`` itself only runs rounds. Everything that can
reject the input (dataset files, partition sizes, the model's fit to the images, an init file)
fails here, before any run directory exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fedlab_cli.data.augment import test_transform, train_transform
from fedlab_cli.data.base import ImageDataset
from fedlab_cli.data.partition import (
    ClientSplits,
    balanced_dirichlet,
    iid,
    pathological,
    split_clients,
)
from fedlab_cli.data.registry import load_dataset
from fedlab_cli.engine.calibration import Calibration
from fedlab_cli.engine.client_data import ClientData
from fedlab_cli.engine.device import resolve_device
from fedlab_cli.engine.federation import Federation
from fedlab_cli.engine.forward import vmappable
from fedlab_cli.engine.method import RunContext, overrides
from fedlab_cli.engine.population import Population, weights_sha256
from fedlab_cli.engine.strategies import make_strategy
from fedlab_cli.engine.trainer import LocalTrainer
from fedlab_cli.engine.world import from_environment
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import assign_roles, build
from fedlab_cli.models.flops import forward_flops
from fedlab_cli.models.stochastic import is_stochastic, streamed
from fedlab_cli.spec.load import ResolvedSpec
from fedlab_cli.spec.model import EngineSpec, RunSpec

Progress = Callable[[str, int, int], None]


def build_federation(
    resolved: ResolvedSpec,
    *,
    dataset: ImageDataset | None = None,
    splits: ClientSplits | None = None,
    progress: Progress | None = None,
    calibrate: bool = True,
) -> Federation:
    """Everything a run needs, ready for round 0 (``calibrate=False`` when a checkpoint will
    restore the calibrated state). ``dataset``/``splits`` skip loading/partitioning."""
    spec = resolved.spec
    device, notice = resolve_device(spec.engine.device)
    world = from_environment(
        device, spec.engine.collective_timeout, spec.engine.deterministic_reduce
    )
    if spec.data.num_clients < world.size:
        raise FedlabError(
            f"data.num_clients: {spec.data.num_clients} clients cannot be shared by "
            f"{world.size} processes (got {spec.data.num_clients})"
        )
    if dataset is None:
        dataset = load_dataset(spec.data.dataset, spec.data.root, spec.data.download, progress)
    if splits is None:
        splits = partition(spec, dataset)
    check_splits(splits, spec)
    torch.manual_seed(spec.seed)  # initial weights (and a method's random architecture)
    model = build_model(resolved, dataset)
    dense_sha256 = getattr(model, "dense_sha256", None)
    model = model.to(device)
    population = Population.replicate(model, spec.data.num_clients, device, world)
    method = resolved.method_cls(resolved.method_params)
    context = RunContext(
        rounds=spec.federation.rounds,
        local_epochs=spec.training.local_epochs,
        dataset=dataset.name,
        num_classes=dataset.num_classes,
        model=spec.model.name,
        image_shape=dataset.image_shape,
        seed=spec.seed,
        device=device,
        architecture=model,
    )
    method.setup(population, context)
    data = ClientData.build(
        dataset,
        splits,
        device,
        train_transform(dataset.name, spec.data.augment, profile=spec.data.transforms),
        test_transform(dataset.name, profile=spec.data.transforms),
    )
    strategy = build_strategy(spec, model, data, population, device)
    federation = Federation(spec, device, model, population, method, data, strategy)
    federation.splits, federation.notice = splits, notice
    federation.initial_sha256 = dense_sha256  # what FedAvg starts from, before the transform
    calibration = Calibration(strategy, population, data, spec.seed)
    method.attach_calibration(calibration)
    if calibrate and overrides(method, "calibrate"):
        # what every method started from, before the calibration changes it (SSFL's mask)
        federation.initial_sha256 = dense_sha256 or weights_sha256(population)
        method.calibrate(population, calibration)
    return federation


def build_model(resolved: ResolvedSpec, dataset: ImageDataset) -> nn.Module:
    """The spec's architecture for this dataset, as the method trains it, from ``model.init``
    when given; fails in one line when it cannot take the dataset's images. A model a method
    transformed carries ``dense_sha256``, the fingerprint of the seeded model it was made from
    (what every other method of the seed starts from, for ``compare``'s check)."""
    spec = resolved.spec
    model = build(spec.model.name, dataset.num_classes, in_channels=dataset.image_shape[0])
    check_model_accepts(model, dataset)
    if overrides(resolved.method_cls, "transform_model"):
        dense_sha256 = model_sha256(model)
        model = resolved.method_cls.transform_model(model, resolved.method_params)
        model.roles = assign_roles(model)  # the transformed layers declare their own
        model.dense_sha256 = dense_sha256
    model = streamed(model)
    if spec.model.init is not None:
        load_init(model, spec.model.init)
    return model


def model_sha256(model: nn.Module) -> str:
    """``weights_sha256`` of a population made from ``model``, without making one."""
    population = Population(
        {n: p.detach().unsqueeze(0) for n, p in model.named_parameters()},
        {n: b.detach().unsqueeze(0) for n, b in model.named_buffers()},
        dict(model.roles),
    )
    return weights_sha256(population)


def load_init(model: nn.Module, path: Path) -> None:
    """Every tensor of ``model`` from a state-dict file; the first key that does not fit (missing,
    unexpected or of another shape) is a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FedlabError(f"model.init: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FedlabError(
            f"model.init: {str(path)!r} is not a readable state dict ({err})"
        ) from None
    if not isinstance(state, dict):
        raise FedlabError(f"model.init: {str(path)!r} holds no state dict")
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise FedlabError(f"model.init: {str(path)!r} has no tensor {name!r} for model.name")
        given = state[name]
        if not isinstance(given, torch.Tensor) or given.shape != tensor.shape:
            shape = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
            raise FedlabError(
                f"model.init: {name!r} in {str(path)!r} has shape {shape}, the model's is "
                f"{tuple(tensor.shape)}"
            )
    extra = next((name for name in state if name not in own), None)
    if extra is not None:
        raise FedlabError(f"model.init: {str(path)!r} has tensor {extra!r} the model does not have")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(state[name].to(tensor.dtype))


def build_strategy(
    spec: RunSpec, model: nn.Module, data: ClientData, population: Population, device
) -> LocalTrainer:
    """The engine spec's strategy; ``auto`` falls back to sequential when ``vmap`` cannot run
    this model (a probe step says), an explicit ``vectorized`` then fails in one line."""
    image_shape = data.dataset.image_shape
    options = {
        "seed": spec.seed,
        "stochastic": is_stochastic(model),
        "eval_batch": spec.eval.batch_size,
    }
    flops = forward_flops(model, image_shape)
    strategy = make_strategy(
        spec.engine, model, spec.training, device, image_shape, flops, **options
    )
    if strategy.name != "vectorized":
        return strategy
    probe = {n: t[:1].expand(2, *t.shape[1:]) for n, t in population.params.items()}
    stats = {n: t[:1].expand(2, *t.shape[1:]).clone() for n, t in population.buffers.items()}
    inputs = torch.zeros(2, 2, *image_shape, device=device)
    reason = vmappable(strategy.forward, probe, stats, inputs)
    strategy.precision.train(True)
    if reason is None:
        return strategy
    if spec.engine.strategy == "vectorized":
        raise FedlabError(
            f"engine.strategy: vectorized cannot batch model {spec.model.name!r} ({reason}); "
            "use sequential or auto (got 'vectorized')"
        )
    fallback = EngineSpec.model_validate({**spec.engine.model_dump(), "strategy": "sequential"})
    return make_strategy(fallback, model, spec.training, device, image_shape, flops, **options)


def partition(spec: RunSpec, dataset: ImageDataset) -> ClientSplits:
    """The spec's split of both pools, from ``seed`` alone (fedlab_cli/data/partition.py)."""
    data = spec.data
    train, test = dataset.train_labels.numpy(), dataset.test_labels.numpy()
    if data.partition == "balanced_dirichlet":
        return balanced_dirichlet(train, test, data.num_clients, data.alpha, spec.seed)
    if data.partition == "iid":
        return iid(train, test, data.num_clients, spec.seed)
    if data.partition == "pathological":
        return pathological(train, test, data.num_clients, data.classes_per_client, spec.seed)
    return split_clients(
        train,
        test,
        data.num_clients,
        data.alpha,
        data.train_per_client,
        data.test_per_client,
        spec.seed,
    )


def check_splits(splits: ClientSplits, spec: RunSpec) -> None:
    """A partition (e.g. a run dir's partition.json) must fit the spec's client count."""
    if len(splits.train) != spec.data.num_clients or len(splits.test) != spec.data.num_clients:
        raise FedlabError(
            f"data.num_clients: the partition has {len(splits.train)} clients, the spec "
            f"{spec.data.num_clients}"
        )


def check_model_accepts(model: nn.Module, dataset: ImageDataset) -> None:
    """Fail early, with one line, when a model cannot take this dataset's images."""
    probe = torch.zeros(2, *dataset.image_shape)
    try:
        with torch.no_grad():
            model.eval()(probe)
    except RuntimeError:
        shape = "x".join(map(str, dataset.image_shape))
        raise FedlabError(
            f"model.name: {type(model).__name__} does not accept the {shape} images of "
            f"dataset {dataset.name!r}"
        ) from None
    finally:
        model.train()
