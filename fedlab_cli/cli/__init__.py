"""The ``fedlab`` command: verbs that parse, call the engine, and print."""

from __future__ import annotations

import typer

from fedlab_cli.cli.boundary import FedlabGroup, enable_debug, installed_version
from fedlab_cli.cli.compare_cmd import compare_command
from fedlab_cli.cli.inertia_cmd import inertia_app
from fedlab_cli.cli.list_cmd import list_command
from fedlab_cli.cli.plot_cmd import plot_command
from fedlab_cli.cli.run_cmd import run_command
from fedlab_cli.cli.sweep_cmd import sweep_command

app = typer.Typer(
    name="fedlab",
    cls=FedlabGroup,
    help="Low-data personalized federated learning: run, compare and inspect methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"fedlab-cli {installed_version()}")
        raise typer.Exit(0)


@app.callback()
def _fedlab(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the installed fedlab-cli version and exit.",
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Show the full traceback of an unexpected error (also: FEDLAB_DEBUG=1).",
    ),
) -> None:
    """Low-data personalized federated learning: run, compare and inspect methods."""
    if debug:
        enable_debug()


app.command("run")(run_command)
app.command("list")(list_command)
app.command("compare")(compare_command)
app.add_typer(inertia_app, name="inertia")
app.command("plot")(plot_command)
app.command("sweep")(sweep_command)


def main() -> None:
    app()
