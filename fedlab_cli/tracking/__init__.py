"""Experiment trackers fed from the round loop: TensorBoard, Weights & Biases, a CSV file.

``metrics.jsonl`` and ``summary.json`` stay the source of truth; a logger is a copy made for
the tools researchers already use. Every logger is opened with the rounds already logged (on
``--resume``: the rounds kept), so that a resumed run continues the same tracker run with each
round exactly once.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedlab_cli.errors import FedlabError

if TYPE_CHECKING:
    from fedlab_cli.spec.load import ResolvedSpec

EXTRAS = {
    "tensorboard": ("tensorboard", "torch.utils.tensorboard"),
    "wandb": ("wandb",),
    "csv": (),
}
"""Each logger's modules; a missing one names the extra ``fedlab-cli[<logger>]``."""


class Logger(Protocol):
    """Receives each logged round (its metrics.jsonl line and its inertia rows)."""

    def log_round(self, record: dict, inertia: Sequence[dict]) -> None: ...

    def close(self, summary: dict | None = None) -> None: ...


def check_available(names: Sequence[str]) -> None:
    """A one-line error naming the extra to install, before anything is trained or written."""
    for name in names:
        for module in EXTRAS[name]:
            try:
                importlib.import_module(module)
            except ImportError:
                raise FedlabError(
                    f"output.loggers: {name} needs the {module!r} package; install it with "
                    f"`pip install 'fedlab-cli[{name}]'`"
                ) from None


def open_loggers(
    resolved: ResolvedSpec, run_dir: Path, past: list[dict], past_inertia: list[dict]
) -> list[Logger]:
    """The spec's loggers for ``run_dir``, each holding the rounds already logged."""
    names = resolved.spec.output.loggers
    check_available(names)
    opened: list[Logger] = []
    for name in names:
        if name == "csv":
            from fedlab_cli.tracking.csv_log import CsvLogger

            opened.append(CsvLogger(run_dir, past))
        elif name == "tensorboard":
            from fedlab_cli.tracking.tensorboard import TensorBoardLogger

            opened.append(TensorBoardLogger(resolved, run_dir, past, past_inertia))
        else:
            from fedlab_cli.tracking.wandb import WandbLogger

            opened.append(WandbLogger(resolved, run_dir, past, past_inertia))
    return opened
