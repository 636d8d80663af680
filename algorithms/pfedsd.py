"""pFedSD (Jin et al. 2022): each client distils from its own previous personalized model.

Aggregation is plain FedAvg of everything (the base ``Method``). What differs is local training:
a client that has trained before adds ``λ·τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))``
(batch mean) to the cross-entropy, where the teacher is its own model right after its previous
local training (REFERENCE.md §5.5, decision 10). The result is that personalized model, so the
method's accuracy is ``acc_local`` (decision 2).

Teachers are stacked like the population (``[C, ...]`` params and buffers) and travel in
checkpoints. As in the reference the teacher runs in train mode by default (BN normalises with
the batch statistics); its forward pass gets copies of the stored BN buffers, so the stored
teacher never changes.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from fedlab_cli.engine.method import Forward, LocalTrace, Method, MethodParams, RunContext
from fedlab_cli.engine.population import Population


class PFedSDParams(MethodParams):
    lam: float = Field(0.5, ge=0, description="weight λ of the self-distillation term")
    temperature: float = Field(3.0, gt=0, description="softmax temperature τ")
    teacher_mode: Literal["train", "eval"] = "train"


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))``, summed over classes, batch mean."""
    log_student = F.log_softmax(student / temperature, dim=1)
    target = F.softmax(teacher / temperature, dim=1)
    return temperature**2 * F.kl_div(log_student, target, reduction="batchmean")


class PFedSD(Method):
    Params: ClassVar[type[MethodParams]] = PFedSDParams
    description: ClassVar[str] = "pFedSD: FedAvg + distillation from the client's last model"
    final_accuracy: ClassVar[Literal["acc_agg", "acc_local"]] = "acc_local"

    def setup(self, population: Population, context: RunContext) -> None:
        """No client has a teacher before its first local training."""
        super().setup(population, context)
        self.teacher_params = {n: t.clone() for n, t in population.params.items()}
        self.teacher_buffers = {n: t.clone() for n, t in population.buffers.items()}
        # host-side flags: the per-step check reads no tensor, so no device sync
        self.has_teacher = [False] * population.num_clients

    def extra_loss(
        self, client: int, inputs: Tensor, logits: Tensor, forward: Forward
    ) -> Tensor | None:
        if not self.has_teacher[client]:
            return None
        with torch.no_grad():
            params = {n: t[client] for n, t in self.teacher_params.items()}
            buffers = {n: t[client].clone() for n, t in self.teacher_buffers.items()}
            train = self.params.teacher_mode == "train"
            teacher = forward(params, buffers, inputs, train=train)
        return self.params.lam * distillation_loss(logits, teacher, self.params.temperature)

    def after_local_training(
        self, population: Population, clients: list[int], round_index: int, trace: LocalTrace
    ) -> None:
        """The participants' freshly trained models become their next teachers."""
        idx = population.index(clients)
        for stored, current in (
            (self.teacher_params, population.params),
            (self.teacher_buffers, population.buffers),
        ):
            for name, tensor in stored.items():
                tensor[idx] = current[name][idx]
        for client in clients:
            self.has_teacher[client] = True

    def state_dict(self) -> dict:
        return {
            "teacher_params": self.teacher_params,
            "teacher_buffers": self.teacher_buffers,
            "has_teacher": torch.tensor(self.has_teacher, dtype=torch.bool),
        }

    def load_state_dict(self, state: dict) -> None:
        for group in ("teacher_params", "teacher_buffers"):
            for name, tensor in getattr(self, group).items():
                tensor.copy_(state[group][name])
        self.has_teacher = [bool(flag) for flag in state["has_teacher"].tolist()]
