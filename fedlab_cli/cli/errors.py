"""Turn fedlab's errors into one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from fedlab_cli.cli import worker
from fedlab_cli.errors import FedlabError, TrainingDivergedError


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr; in a run over several processes a refused input is said by rank 0
    alone (every rank refuses the same spec)."""
    if code != 2 or worker.is_main():
        print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Inside this block a FedlabError ends the command with its one-line message."""
    try:
        yield
    except (FedlabError, TrainingDivergedError) as err:
        raise fail(str(err), err.exit_code) from None
