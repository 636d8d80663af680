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
from fedlab_cli.models import MODELS
from fedlab_cli.spec.types import (
    MAX_ALPHA,
    MIN_ALPHA,
    FieldProblem,
    FiniteFloat,
    NonNegativeCount,
    Seed,
    SpecPath,
    StrictBool,
    StrictCount,
    StrictInt,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(_Section):
    dataset: str
    root: SpecPath = Path("data")
    download: StrictBool = True
    num_clients: StrictCount = Field(100, ge=1)
    alpha: FiniteFloat = Field(0.1, ge=MIN_ALPHA, le=MAX_ALPHA)
    train_per_client: StrictCount = Field(100, ge=1)
    test_per_client: StrictCount = Field(400, ge=1)
    augment: StrictBool = True

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset (known: {', '.join(sorted(DATASETS))})")
        return name


class ModelSpec(_Section):
    name: str

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model (known: {', '.join(sorted(MODELS))})")
        return name


class FederationSpec(_Section):
    rounds: StrictCount = Field(300, ge=1)
    participation: FiniteFloat = Field(1.0, gt=0, le=1)


class TrainingSpec(_Section):
    local_epochs: StrictCount = Field(5, ge=1)
    batch_size: StrictCount = Field(100, ge=1)
    lr: FiniteFloat = Field(0.1, gt=0)
    momentum: FiniteFloat = Field(0.9, ge=0, lt=1)
    weight_decay: FiniteFloat = Field(0.0, ge=0)


class MethodSpec(BaseModel):
    """``name`` plus the method's own parameters (extras, until the method validates them)."""

    model_config = ConfigDict(extra="allow")
    name: str


class EvalSpec(_Section):
    every: StrictCount = Field(1, ge=1)


class EngineSpec(_Section):
    """How a run executes; none of these changes the algorithm, only speed and float rounding."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategy: Literal["auto", "sequential", "vectorized"] = Field(
        "auto", description="auto: sequential on CPU, vectorized on CUDA"
    )
    chunk_size: StrictCount | None = Field(
        None, ge=1, description="vectorized: clients per batched computation; none = from memory"
    )
    autocast: Literal["none", "bf16"] = Field(
        "none", description="bf16: convs and linear layers in bfloat16, as torch.autocast does"
    )
    layout: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="image batches' memory format; auto: channels_last on CPU"
    )
    tf32: StrictBool = Field(True, description="CUDA: TF32 tensor cores for fp32 convs and matmuls")


DEFAULT_REF_ROUNDS = [2]


class InertiaSpec(_Section):
    """Layer-wise inertia recording (cosine of the shared model to reference rounds)."""

    ref_rounds: list[StrictInt] = Field(default_factory=lambda: list(DEFAULT_REF_ROUNDS))


class OutputSpec(_Section):
    dir: SpecPath | None = None
    checkpoint_every: StrictCount = Field(50, ge=1)
    keep_checkpoints: NonNegativeCount = Field(2, ge=0, description="0 keeps every checkpoint")


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
            if wanted > pool:
                raise FieldProblem(
                    f"data.{field}", f"{wanted} exceeds the pool of {pool} samples", wanted
                )
        return self
