"""Weights & Biases, imported only when asked for; ``WANDB_MODE=offline`` is honoured (W&B
reads it itself). The run's id is kept in ``RUN_DIR/wandb_id`` so that ``--resume`` continues
the same W&B run; rounds already in it are not sent again (W&B takes each step once)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

from fedlab_cli.atomic import atomic_write_text
from fedlab_cli.spec.load import ResolvedSpec
from fedlab_cli.tracking.scalars import by_round, hparams, inertia_scalars, round_scalars

WANDB_ID = "wandb_id"
WANDB_DIR = "wandb"


class WandbLogger:
    """One W&B run per run dir, grouped as the spec says (a compare's seeds share a group)."""

    def __init__(
        self, resolved: ResolvedSpec, run_dir: Path, past: list[dict], past_inertia: list[dict]
    ) -> None:
        import wandb

        run_dir = Path(run_dir)
        spec = resolved.spec
        settings = spec.output.wandb
        id_file = run_dir / WANDB_ID
        resumed = id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else secrets.token_hex(4)
        if not resumed:
            atomic_write_text(id_file, run_id + "\n")
        (run_dir / WANDB_DIR).mkdir(exist_ok=True)
        self.run = wandb.init(
            project=settings.project,
            group=settings.group,
            name=settings.name or f"{spec.method.name}-seed{spec.seed}",
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=hparams(resolved.to_dict()),
            reinit="create_new",
        )
        self.last_step = -1 if not resumed else self._resumed_step()
        inertia = by_round(past_inertia)
        for record in past:  # rounds the W&B run may lack (killed before W&B had them)
            self._add(record, inertia.get(record["round"], []))

    def _resumed_step(self) -> int:
        """The last step the W&B run already holds (online resume tells; offline: none)."""
        return int(getattr(self.run, "starting_step", 0) or 0) - 1

    def log_round(self, record: dict, inertia: Sequence[dict]) -> None:
        self._add(record, inertia)

    def close(self, summary: dict | None = None) -> None:
        if summary is not None:
            final = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
            self.run.summary.update(final)
        self.run.finish()

    def _add(self, record: dict, inertia: Sequence[dict]) -> None:
        step = record["round"]
        if step <= self.last_step:
            return
        scalars = {**round_scalars(record), **inertia_scalars(list(inertia))}
        self.run.log(scalars, step=step)
        self.last_step = step
