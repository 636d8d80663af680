"""The CLI's one error boundary: every failure of every command ends as one line on stderr.

- a ``FedlabError`` (bad input, missing file, damaged run dir) prints its message, exit 2;
- a usage error (unknown option, missing argument) prints click's message on one line, exit 2;
- Ctrl-C outside training prints ``interrupted``, exit 130;
- anything unexpected prints what failed and where a crash report with the traceback was
  written (the run dir when known, else the temp dir), exit 1. ``fedlab --debug ...`` or
  ``FEDLAB_DEBUG=1`` lets the traceback through instead.

Warnings (a stale dataset cache rebuilt, a damaged log line skipped) are shown as one
``WARNING:`` line each, not as Python's two-line ``file:line: UserWarning`` form.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from typer import _click
from typer.core import TyperGroup

from fedlab_cli.errors import FedlabError, TrainingDivergedError

DEBUG_ENV = "FEDLAB_DEBUG"


class _State:
    """What the boundary knows about the command running now (reset for each invocation)."""

    debug = False
    report_dir: Path | None = None


def enable_debug() -> None:
    _State.debug = True


def debugging() -> bool:
    return _State.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def report_crashes_in(directory: Path) -> None:
    """Crash reports of this command go to ``directory`` (its run dir) from now on."""
    _State.report_dir = Path(directory)


class FedlabGroup(TyperGroup):
    """``fedlab``'s command group, whose ``main`` is the error boundary for every command."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _State.debug, _State.report_dir = False, None
        argv = list(sys.argv[1:] if args is None else args)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            code = self._guarded(argv, prog_name, complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _guarded(self, argv: list[str], prog_name, complete_var, extra) -> int:
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as err:
            return err.exit_code  # the help was printed when the error was made
        except _click.exceptions.ClickException as err:
            _say(f"error: {usage_line(err)}")
            return err.exit_code
        except typer.Abort:
            _say("error: interrupted")
            return 130
        except (FedlabError, TrainingDivergedError) as err:
            _say(f"error: {_one_line(str(err))}")
            return err.exit_code
        except KeyboardInterrupt:
            _say("error: interrupted")
            return 130
        except Exception as err:
            if debugging():
                raise
            _say(crash_line(err, argv, write_crash_report(err, argv)))
            return 1
        return result if isinstance(result, int) else 0


def usage_line(err: _click.exceptions.ClickException) -> str:
    """Click's message with the help hint, on one line."""
    message = _one_line(err.format_message())
    ctx = getattr(err, "ctx", None)
    if isinstance(err, _click.exceptions.UsageError) and ctx is not None:
        return f"{message} (see `{ctx.command_path} --help`)"
    return message


def crash_line(err: BaseException, argv: list[str], report: Path | None) -> str:
    """What failed, where the report is, how to see the traceback: one line."""
    verb = argv[0] if argv and not argv[0].startswith("-") else ""
    command = f"fedlab {verb}".strip()
    what = _one_line(f"{type(err).__name__}: {err}")[:200]
    where = f"full report in {report}" if report else "no crash report could be written"
    return (
        f"error: {command} failed unexpectedly ({what}); {where}; for the traceback rerun "
        f"with `fedlab --debug {verb or '...'} ...` or {DEBUG_ENV}=1"
    )


def write_crash_report(err: BaseException, argv: list[str]) -> Path | None:
    """The traceback and the context needed to report it, in the run dir when known (else the
    temp dir); None if no place can be written."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"fedlab-crash-{stamp}-{os.getpid()}.log"
    text = "\n".join(
        [
            f"fedlab crash report, {datetime.now().isoformat(timespec='seconds')}",
            f"command: fedlab {' '.join(argv)}",
            f"fedlab-cli {installed_version()}, Python {platform.python_version()}, "
            f"{platform.platform()}",
            f"working directory: {os.getcwd()}",
            "",
            "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        ]
    )
    places = [_State.report_dir, Path(tempfile.gettempdir())]
    for place in places:
        if place is None or not place.is_dir():
            continue
        try:
            path = place / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def installed_version() -> str:
    """The installed distribution's version (package metadata), else the source's."""
    from importlib import metadata

    try:
        return metadata.version("fedlab-cli")
    except metadata.PackageNotFoundError:
        from fedlab_cli import __version__

        return __version__


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"WARNING: {_one_line(str(message))}")


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _say(text: str) -> None:
    print(text, file=sys.stderr)
