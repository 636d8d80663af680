"""The ``fedlab`` command: verbs that parse, call the engine, and print."""

from __future__ import annotations

import typer

from fedlab_cli.cli.compare_cmd import compare_command
from fedlab_cli.cli.inertia_cmd import inertia_app
from fedlab_cli.cli.list_cmd import list_command
from fedlab_cli.cli.run_cmd import run_command

app = typer.Typer(
    name="fedlab",
    help="Low-data personalized federated learning: run, compare and inspect methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("run")(run_command)
app.command("list")(list_command)
app.command("compare")(compare_command)
app.add_typer(inertia_app, name="inertia")


def main() -> None:
    app()
