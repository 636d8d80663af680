"""TensorBoard event files under ``RUN_DIR/tb/`` via ``torch.utils.tensorboard``.

On open the directory is rebuilt from the rounds already logged (none for a new run, the kept
rounds on ``--resume``), then rounds are appended and flushed one by one. Rounds a killed run
logged after its last checkpoint are therefore never in the files twice: they are dropped with
the old files and written again when the resumed run redoes them, and the event files always
hold exactly the rounds of ``metrics.jsonl``, whatever the moment of the kill.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from fedlab_cli.spec.load import ResolvedSpec
from fedlab_cli.tracking.scalars import by_round, hparams, inertia_scalars, round_scalars

TB_DIR = "tb"
HPARAM_METRICS = ("acc_agg", "acc_local", "loss")
"""Scalars the hparams dashboard shows beside the settings."""


class TensorBoardLogger:
    """One TensorBoard run per run dir: every per-round scalar, per-layer inertia, hparams."""

    def __init__(
        self, resolved: ResolvedSpec, run_dir: Path, past: list[dict], past_inertia: list[dict]
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        directory = Path(run_dir) / TB_DIR
        shutil.rmtree(directory, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(directory), flush_secs=10**6)
        for summary in hparams_summary(
            hparams(resolved.to_dict()), dict.fromkeys(HPARAM_METRICS, 0.0)
        ):
            self.writer.file_writer.add_summary(summary)
        inertia = by_round(past_inertia)
        for record in past:
            self._add(record, inertia.get(record["round"], []))
        self.writer.flush()

    def log_round(self, record: dict, inertia: Sequence[dict]) -> None:
        self._add(record, inertia)
        self.writer.flush()  # before the round's checkpoint: a kill never loses a kept round

    def close(self, summary: dict | None = None) -> None:
        self.writer.close()

    def _add(self, record: dict, inertia: Sequence[dict]) -> None:
        step = record["round"]
        scalars = {**round_scalars(record), **inertia_scalars(list(inertia))}
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
