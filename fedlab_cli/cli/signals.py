"""Ctrl-C and SIGTERM during training: finish the round, checkpoint, say how to resume.

Before training starts (loading data, building the federation) a signal aborts at once. Once
training runs, the first SIGINT or SIGTERM only sets a flag; ``StopAfterRound.callback`` (an
``on_round`` callback placed after the session's own) sees it once the round is logged, saves a
checkpoint of exactly that round and raises ``StopRequested``. The command then prints the
resume command and exits 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second
signal aborts at once (``KeyboardInterrupt``): the run then resumes from its last regular
checkpoint.

The engine is not involved: the checkpoint is the one ``RunSession.on_round`` writes, with the
same state and the same ``keep_checkpoints`` pruning. In a run over several processes they
agree each round (one tiny reduction) whether any of them was signalled, so all stop after the
same round and write one checkpoint together.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(Exception):
    """Training stopped cleanly after a round, on a signal; the checkpoint is written."""

    def __init__(self, signum: int, last_round: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after round {last_round}")
        self.signum = signum
        self.last_round = last_round

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopAfterRound:
    """Installs the SIGINT/SIGTERM handlers for its ``with`` block (main thread only)."""

    def __init__(self, announce: Callable[[str], None] | None = None) -> None:
        self.signum: int | None = None
        self.abort_signum: int | None = None
        self.armed = False
        self._announce = announce or (lambda text: print(text, file=sys.stderr))
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopAfterRound:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    @property
    def abort_code(self) -> int:
        """The exit code of an immediate abort: 128 + the (second) signal, 130 by default."""
        return 128 + (self.abort_signum or signal.SIGINT)

    def arm(self) -> None:
        """Training starts: from now on a first signal stops after the round instead."""
        self.armed = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed or self.signum is not None:
            self.abort_signum = signum
            raise KeyboardInterrupt
        self.signum = signum
        self._announce(
            f"{signal.Signals(signum).name}: stopping after this round (with a checkpoint); "
            "press Ctrl-C again to abort now"
        )

    def callback(self, session) -> Callable[[Any], None]:
        """An ``on_round`` callback: after a signal, checkpoint this round and stop (unless it
        was the last round, which finishes the run normally)."""

        def check(record: Any) -> None:
            signum = self.signum
            world = session.federation.population.world
            if world.distributed:  # every process stops after the same round, or none does
                asked = world.sum(torch.tensor([1.0 if signum else 0.0]))
                if signum is None and float(asked) > 0:
                    signum = signal.SIGTERM  # another process was signalled
            if signum is None or record.round + 1 >= session.federation.rounds:
                return
            session.save_checkpoint(record.round)
            raise StopRequested(signum, record.round)

        return check
