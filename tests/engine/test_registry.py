"""Methods are found through entry points, so a third-party package can add one."""

import json
from importlib import metadata

import pytest
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.engine import registry
from fedlab_cli.errors import FedlabError

PLUGIN = """
from typing import ClassVar
from fedlab_cli.engine.method import Method, MethodParams

class HalfParams(MethodParams):
    mu: float = 0.5

class HalfAvg(Method):
    Params: ClassVar[type[MethodParams]] = HalfParams
    description: ClassVar[str] = "a third-party method"
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package outside fedlab declaring an entry point in ``fedlab.methods``."""
    (tmp_path / "fedlab_demo_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    extra = metadata.EntryPoint("halfavg", "fedlab_demo_plugin:HalfAvg", registry.GROUP)
    real = metadata.entry_points

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        return [*found, extra] if kwargs.get("group") == registry.GROUP else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_builtin_methods_are_registered():
    assert {"separate", "fedavg", "fedbn"} <= set(registry.available_methods())


def test_an_extra_entry_point_is_picked_up(plugin, make_spec):
    assert "halfavg" in registry.available_methods()
    resolved = make_spec(method={"name": "halfavg", "mu": 0.25})
    assert resolved.method_cls.__name__ == "HalfAvg"
    assert resolved.method_params.mu == 0.25
    listed = CliRunner().invoke(app, ["list", "methods", "--json"])
    assert listed.exit_code == 0
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["halfavg"]["entry_point"] == "fedlab_demo_plugin:HalfAvg"


def test_unknown_method_names_the_known_ones():
    with pytest.raises(FedlabError, match=r"method.name: unknown method 'fedx' \(known: .*fedbn"):
        registry.load_method("fedx")
