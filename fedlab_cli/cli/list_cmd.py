"""``fedlab list``: what methods, models, datasets and presets this installation offers."""

from __future__ import annotations

import json
from enum import Enum

import typer
from rich.console import Console
from rich.table import Table

from fedlab_cli.cli.errors import user_errors
from fedlab_cli.cli.presets import list_presets
from fedlab_cli.data.registry import DATASETS
from fedlab_cli.engine.registry import available_methods, load_method
from fedlab_cli.models import available_models, describe


class Listing(str, Enum):
    methods = "methods"
    models = "models"
    datasets = "datasets"
    presets = "presets"


def _method_row(name: str, entry: str, metric: str, params: str, description: str) -> dict:
    return {
        "name": name,
        "entry_point": entry,
        "final_metric": metric,
        "params": params,
        "description": description,
    }


def _rows(what: Listing) -> list[dict]:
    if what is Listing.methods:
        rows = []
        for name, entry in sorted(available_methods().items()):
            try:
                cls = load_method(name)
            except Exception as err:  # a broken plugin must not hide the working methods
                rows.append(_method_row(name, entry.value, "—", "—", f"cannot load: {err}"))
                continue
            params = json.dumps(cls.Params().model_dump())
            rows.append(_method_row(name, entry.value, cls.final_accuracy, params, cls.description))
        return rows
    if what is Listing.models:
        rows = []
        for name, entry in sorted(available_models().items()):
            try:
                description = describe(name)
            except Exception as err:  # a broken plugin must not hide the working models
                description = f"cannot load: {err}"
            rows.append({"name": name, "entry_point": entry.value, "description": description})
        return rows
    if what is Listing.datasets:
        return [
            {
                "name": d.name,
                "classes": d.num_classes,
                "image": "x".join(map(str, d.image_shape)),
                "train_pool": d.train_pool,
                "test_pool": d.test_pool,
                "source": d.source,
            }
            for d in DATASETS.values()
        ]
    return [{"name": name, "path": str(path)} for name, path in list_presets().items()]


def list_command(
    what: Listing = typer.Argument(..., help="methods, models, datasets or presets"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the installed methods, models, datasets or presets."""
    with user_errors():
        rows = _rows(what)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=what.value)
    for column in rows[0] if rows else ["name"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
