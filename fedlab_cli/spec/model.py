"""The run spec: every knob of a federated run, typed and range-checked by pydantic.

Unknown keys are rejected everywhere, so a typo never silently falls back to a default. The
method section holds ``name`` plus that method's own typed parameters, validated by the
method's ``Params`` model once the name is known (see ``fedlab_cli.spec.load``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedlab_cli.data.registry import DATASETS
from fedlab_cli.models import available_models, known_models
from fedlab_cli.spec.types import (
    MAX_ALPHA,
    MIN_ALPHA,
    FieldProblem,
    FiniteFloat,
    NonEmptyText,
    NonNegativeCount,
    Seed,
    SpecPath,
    StrictBool,
    StrictCount,
    StrictInt,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


PER_CLIENT_DEFAULTS = {"train_per_client": 100, "test_per_client": 400}
"""Samples per client of the Dirichlet split (the other partitions split the whole pool)."""


class DataSpec(_Section):
    dataset: str
    root: SpecPath = Path("data")
    download: StrictBool = True
    num_clients: StrictCount = Field(100, ge=1)
    partition: Literal["dirichlet", "balanced_dirichlet", "iid", "pathological"] = Field(
        "dirichlet",
        description="dirichlet: the LIPS reference; balanced_dirichlet: SSFL's; iid, "
        "pathological: FedPM's",
    )
    alpha: FiniteFloat = Field(
        0.1, ge=MIN_ALPHA, le=MAX_ALPHA, description="Dirichlet concentration (both kinds)"
    )
    train_per_client: StrictCount | None = Field(None, description="dirichlet only; default 100")
    test_per_client: StrictCount | None = Field(None, description="dirichlet only; default 400")
    classes_per_client: StrictCount | None = Field(None, description="pathological only")
    augment: StrictBool = True
    transforms: Literal["lips", "ssfl", "fedpm"] = Field(
        "lips", description="whose per-dataset transforms: the LIPS, SSFL or FedPM code's"
    )

    @model_validator(mode="before")
    @classmethod
    def _per_client_defaults(cls, data: object) -> object:
        """The Dirichlet split's sample counts default to the reference's 100 / 400."""
        if isinstance(data, dict) and data.get("partition", "dirichlet") == "dirichlet":
            data = dict(data)
            for key, default in PER_CLIENT_DEFAULTS.items():
                if data.get(key) is None:
                    data[key] = default
        return data

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset (known: {', '.join(sorted(DATASETS))})")
        return name


class ModelSpec(_Section):
    name: str
    init: SpecPath | None = Field(
        None, description="state_dict file every client starts from (warm start); none = seeded"
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in available_models():
            raise ValueError(f"unknown model (known: {known_models()})")
        return name


class FederationSpec(_Section):
    rounds: StrictCount = Field(300, ge=1)
    participation: FiniteFloat = Field(1.0, gt=0, le=1)


class LRScheduleSpec(_Section):
    """The learning rate per round (fedlab_cli/engine/schedule.py)."""

    name: Literal["constant", "exponential", "cosine_restarts"] = "constant"
    gamma: FiniteFloat = Field(1.0, gt=0, le=1, description="exponential: lr * gamma**round")
    cycle: StrictCount = Field(10, ge=1, description="cosine_restarts: rounds per cycle")
    eta_min: FiniteFloat = Field(0.0, ge=0, description="cosine_restarts: the lowest lr")
    unit: Literal["round", "epoch"] = Field(
        "round",
        description="what t counts: rounds, or local epochs restarting every round (SSFL's code)",
    )


_SGD_ONLY = {"momentum": 0.9, "nesterov": False}
_ADAM_ONLY = {"betas": (0.9, 0.999), "eps": 1e-8}


class TrainingSpec(_Section):
    local_epochs: StrictCount = Field(5, ge=1)
    batch_size: StrictCount = Field(100, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: FiniteFloat = Field(0.1, gt=0)
    momentum: FiniteFloat = Field(0.9, ge=0, lt=1, description="sgd")
    nesterov: StrictBool = Field(False, description="sgd")
    betas: tuple[FiniteFloat, FiniteFloat] = Field((0.9, 0.999), description="adam")
    eps: FiniteFloat = Field(1e-8, gt=0, description="adam")
    weight_decay: FiniteFloat = Field(0.0, ge=0, description="L2, added to the gradient")
    optimizer_state: Literal["reset", "keep"] = Field(
        "reset", description="reset: fresh every round; keep: each client's carries over"
    )
    lr_schedule: LRScheduleSpec = LRScheduleSpec()
    grad_clip: FiniteFloat | None = Field(
        None, gt=0, description="each client's gradient clipped to this global 2-norm"
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("each beta must be in [0, 1)")
        return betas

    def unused_keys(self) -> list[str]:
        """Keys of the other optimizer given a non-default value: they would be silently unused."""
        foreign = _ADAM_ONLY if self.optimizer == "sgd" else _SGD_ONLY
        return [
            key
            for key, default in foreign.items()
            if key in self.model_fields_set and getattr(self, key) != default
        ]


class MethodSpec(BaseModel):
    """``name`` plus the method's own parameters (extras, until the method validates them)."""

    model_config = ConfigDict(extra="allow")
    name: str


class EvalSpec(_Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    every: StrictCount = Field(1, ge=1)
    global_model: StrictBool = Field(
        False,
        alias="global",
        description="also acc_global: the method's global model on the union of test splits",
    )
    batch_size: StrictCount | None = Field(
        None, description="test samples per forward pass; none = 4 x training.batch_size"
    )


class EngineSpec(_Section):
    """How a run executes; none of these changes the algorithm, only speed and float rounding."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategy: Literal["auto", "sequential", "vectorized"] = Field(
        "auto", description="auto: sequential on CPU, vectorized on CUDA"
    )
    chunk_size: StrictCount | None = Field(
        None, description="vectorized: clients per batched computation; none = from memory"
    )
    autocast: Literal["none", "bf16"] = Field(
        "none", description="bf16: convs and linear layers in bfloat16, as torch.autocast does"
    )
    layout: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="image batches' memory format; auto: channels_last on CPU"
    )
    tf32: StrictBool = Field(True, description="CUDA: TF32 tensor cores for fp32 convs and matmuls")
    deterministic_reduce: StrictBool = Field(
        False,
        description="several processes: gather and sum in client-id order, so every world "
        "size gives bitwise the numbers of one process (else one all_reduce per round)",
    )
    collective_timeout: FiniteFloat = Field(
        300.0, gt=0, description="several processes: seconds a collective waits for the others"
    )


DEFAULT_REF_ROUNDS = [2]


class InertiaSpec(_Section):
    """Layer-wise inertia recording (cosine of the shared model to reference rounds)."""

    ref_rounds: list[StrictInt] = Field(default_factory=lambda: list(DEFAULT_REF_ROUNDS))


LoggerName = Literal["tensorboard", "wandb", "csv"]


class WandbSpec(_Section):
    """Where a W&B run goes; unset group/name are filled in from the run (see loggers)."""

    project: NonEmptyText = "fedlab"
    group: NonEmptyText | None = Field(None, description="a compare or sweep sets one per method")
    name: NonEmptyText | None = Field(None, description="default: <method>-seed<seed>")


class OutputSpec(_Section):
    dir: SpecPath | None = None
    checkpoint_every: StrictCount = Field(50, ge=1)
    keep_checkpoints: NonNegativeCount = Field(2, ge=0, description="0 keeps every checkpoint")
    loggers: list[LoggerName] = Field(
        default_factory=list,
        description="also write to tensorboard (RUN_DIR/tb), wandb, csv (metrics.csv); "
        "metrics.jsonl stays the source of truth",
    )
    wandb: WandbSpec = WandbSpec()

    @field_validator("loggers")
    @classmethod
    def _distinct(cls, loggers: list[str]) -> list[str]:
        twice = next((name for name in loggers if loggers.count(name) > 1), None)
        if twice is not None:
            raise ValueError(f"logger {twice!r} is given twice")
        return loggers


class RunSpec(_Section):
    data: DataSpec
    model: ModelSpec
    federation: FederationSpec = FederationSpec()
    training: TrainingSpec = TrainingSpec()
    method: MethodSpec
    eval: EvalSpec = EvalSpec()
    engine: EngineSpec = EngineSpec()
    inertia: InertiaSpec = InertiaSpec()
    seed: Seed = Field(0, ge=0)
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        """Rules across sections, checked before any data is loaded or memory allocated."""
        rounds = self.federation.rounds
        refs = self.inertia.ref_rounds
        late = [r for r in refs if r >= rounds]
        if late and refs != DEFAULT_REF_ROUNDS:  # the default just records no cos_ref then
            raise FieldProblem(
                "inertia.ref_rounds",
                f"reference round {late[0]} is never reached: rounds are 0-based and "
                f"federation.rounds is {rounds}",
                refs,
            )
        info = DATASETS[self.data.dataset]
        for field, wanted, pool in (
            ("train_per_client", self.data.train_per_client, info.train_pool),
            ("test_per_client", self.data.test_per_client, info.test_pool),
        ):
            if wanted is not None and wanted > pool:
                raise FieldProblem(
                    f"data.{field}", f"{wanted} exceeds the pool of {pool} samples", wanted
                )
        return self
