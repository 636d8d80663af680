"""``fedlab list``: tables for people, JSON for scripts."""

import json

import pytest
from typer.testing import CliRunner

from fedlab_cli.cli import app


@pytest.mark.parametrize(
    "what, expected",
    [
        ("methods", {"separate", "fedavg", "fedbn"}),
        ("models", {"vgg6", "resnet6", "resnet8", "resnet10", "small_cnn"}),
        ("datasets", {"cifar10", "cifar100", "tinyimagenet", "digits"}),
        ("presets", {"quickstart", "cifar10_fedbn", "cifar100_fedbn", "tinyimagenet_fedbn"}),
    ],
)
def test_list_json(what, expected):
    result = CliRunner().invoke(app, ["list", what, "--json"])
    assert result.exit_code == 0
    assert expected <= {row["name"] for row in json.loads(result.stdout)}


def test_list_methods_table_shows_final_metric():
    result = CliRunner().invoke(app, ["list", "methods"])
    assert result.exit_code == 0 and "acc_agg" in result.stdout and "fedbn" in result.stdout


def test_presets_are_valid_specs():
    from fedlab_cli.cli.presets import list_presets
    from fedlab_cli.spec.load import load_spec

    for name, path in list_presets().items():
        resolved = load_spec(path)
        assert resolved.spec.method.name, name
