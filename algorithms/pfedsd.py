"""pFedSD (Jin et al. 2022): each client distils from its own previous personalized model.

Aggregation is plain FedAvg of everything (the base ``Method``). What differs is local training:
a client that has trained before adds ``λ·τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))``
(batch mean) to the cross-entropy, where the teacher is its own model right after its previous
local training (REFERENCE.md §5.5, decision 10). The result is that personalized model, so the
method's accuracy is ``acc_local`` (decision 2).

Teachers are per-client state declared to the engine (``teacher.params.*``,
``teacher.buffers.*``, ``teacher.ready``), so they are chunked with their clients and travel in
checkpoints. As in the reference the teacher runs in train mode by default (BN normalises with
the batch statistics); its forward pass gets copies of the stored BN buffers, so the stored
teacher never changes. A block's clients without a teacher yet add nothing (their term is
multiplied by 0).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from fedlab_cli.engine.method import Block, LocalTrace, Method, MethodParams, RunContext
from fedlab_cli.engine.population import Population


class PFedSDParams(MethodParams):
    lam: float = Field(0.5, ge=0, description="weight λ of the self-distillation term")
    temperature: float = Field(3.0, gt=0, description="softmax temperature τ")
    teacher_mode: Literal["train", "eval"] = "train"


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``[k]``: per client, ``τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))`` summed over
    classes, mean over the batch (logits ``[k, b, classes]``)."""
    log_student = F.log_softmax(student / temperature, dim=-1)
    target = F.softmax(teacher / temperature, dim=-1)
    pointwise = F.kl_div(log_student, target, reduction="none")
    return temperature**2 * (pointwise.flatten(1).sum(1) / student.shape[1])


class PFedSD(Method):
    Params: ClassVar[type[MethodParams]] = PFedSDParams
    description: ClassVar[str] = "pFedSD: FedAvg + distillation from the client's last model"
    final_accuracy: ClassVar[Literal["acc_agg", "acc_local"]] = "acc_local"

    def setup(self, population: Population, context: RunContext) -> None:
        """No client has a teacher before its first local training."""
        super().setup(population, context)
        for group, tensors in (("params", population.params), ("buffers", population.buffers)):
            for name, tensor in tensors.items():
                population.add_state(f"teacher.{group}.{name}", tensor.clone())
        ready = torch.zeros(population.num_clients, dtype=torch.bool, device=population.device)
        self.ready = population.add_state("teacher.ready", ready)
        self.first = population.first
        # host-side mirror of teacher.ready, by client id: the per-step check reads no tensor
        self.has_teacher = [False] * population.total_clients

    def extra_loss(
        self, block: Block, params: dict[str, Tensor], inputs: Tensor, logits: Tensor
    ) -> Tensor | None:
        if not any(self.has_teacher[c] for c in block.clients):
            return None
        state = block.state
        with torch.no_grad():
            teacher_params = {n: state[f"teacher.params.{n}"] for n in params}
            teacher_buffers = {
                n[len("teacher.buffers.") :]: t.clone()
                for n, t in state.items()
                if n.startswith("teacher.buffers.")
            }
            train = self.params.teacher_mode == "train"
            teacher = block.forward(teacher_params, teacher_buffers, inputs, train=train)
        term = self.params.lam * distillation_loss(logits, teacher, self.params.temperature)
        if all(self.has_teacher[c] for c in block.clients):
            return term
        return term * state["teacher.ready"].to(term.dtype)

    def after_local_training(
        self, population: Population, clients: list[int], round_index: int, trace: LocalTrace
    ) -> None:
        """The participants' freshly trained models become their next teachers."""
        idx = population.index(clients)
        for group, current in (("params", population.params), ("buffers", population.buffers)):
            for name, tensor in current.items():
                population.state[f"teacher.{group}.{name}"][idx] = tensor[idx]
        population.state["teacher.ready"][idx] = True
        for client in clients:
            self.has_teacher[client] = True

    def load_state_dict(self, state: dict) -> None:
        """The teachers came back with the population; the host mirror follows them."""
        for row, flag in enumerate(self.ready.tolist()):
            self.has_teacher[self.first + row] = bool(flag)
