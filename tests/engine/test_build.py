"""The composition root: open models (entry points, declared roles, stochastic layers),
``model.init`` warm starts, and a strategy chosen so it can run the model."""

import json
import textwrap

import pytest
import torch
from support import Crash, crash_after, strip_time
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build

PLUGIN = '''
import torch
from torch import nn


class Scaled(nn.Module):
    """A layer fedlab has no rule for; it declares its parameter's role itself."""

    def __init__(self, width):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))

    def fedlab_roles(self):
        return {"gain": "norm"}

    def forward(self, x):
        return x * self.gain


class TinyDropoutNet(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.scale = Scaled(8 * 16)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8 * 16, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = nn.functional.max_pool2d(x, 2).flatten(1)
        return self.head(self.drop(self.scale(x)))


def tiny_dropout(num_classes, in_channels=1):
    """A tiny third-party CNN with dropout"""
    return TinyDropoutNet(num_classes, in_channels)


class Opaque(nn.Conv2d):
    def __init__(self, *args):
        super().__init__(*args)
        self.extra = nn.Parameter(torch.zeros(1))


def opaque(num_classes, in_channels=1):
    """A model whose conv has a parameter of no known role"""
    return nn.Sequential(Opaque(in_channels, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))
'''


@pytest.fixture
def plugin_models(tmp_path, monkeypatch):
    """A package outside fedlab registering models in ``fedlab.models``, the way pip would:
    a module plus a dist-info folder with an entry_points.txt on the import path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fedlab_demo_models.py").write_text(PLUGIN)
    info = site / "fedlab_demo_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fedlab-demo-models\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [fedlab.models]
            tiny_dropout = fedlab_demo_models:tiny_dropout
            opaque = fedlab_demo_models:opaque
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_a_third_party_model_is_listed_and_trains(plugin_models, make_spec, tmp_path):
    listed = CliRunner().invoke(app, ["list", "models", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny_dropout"]["description"] == "A tiny third-party CNN with dropout"
    assert rows["tiny_dropout"]["entry_point"] == "fedlab_demo_models:tiny_dropout"
    assert {"vgg6", "resnet8", "small_cnn"} <= set(rows)  # built-ins come the same way
    spec = make_spec(model={"name": "tiny_dropout"}, federation={"rounds": 2})
    session = RunSession.start(spec, tmp_path / "run")
    before = session.federation.population.params["scale.gain"].clone()
    run(session.federation, on_round=[session.on_round])
    assert session.federation.population.roles["scale.gain"].kind.value == "norm"
    assert not torch.equal(session.federation.population.params["scale.gain"], before)  # trained


def test_an_unknown_parameter_kind_fails_naming_it(plugin_models, make_spec, tmp_path):
    with pytest.raises(FedlabError, match=r"tensor '0\.extra' \(Opaque\.extra\) has no known role"):
        RunSession.start(make_spec(model={"name": "opaque"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def dropout_run(make_spec, tmp_path, name, strategy, **sections):
    spec = make_spec(
        model={"name": "tiny_dropout"},
        federation={"rounds": 4},
        engine={"strategy": strategy},
        output={"checkpoint_every": 2},
        **sections,
    )
    return RunSession.start(spec, tmp_path / name)


def test_dropout_gives_the_same_numbers_in_both_strategies_and_across_resume(
    plugin_models, make_spec, tmp_path
):
    runs = {}
    for strategy in ("sequential", "vectorized"):
        session = dropout_run(make_spec, tmp_path, strategy, strategy)
        assert (
            session.federation.strategy.name == strategy and session.federation.strategy.stochastic
        )
        run(session.federation, on_round=[session.on_round])
        runs[strategy] = session
    seq, vec = runs["sequential"].records, runs["vectorized"].records
    for a, b in zip(seq, vec, strict=True):
        assert a["acc_local_clients"] == b["acc_local_clients"]
        assert a["acc_agg_clients"] == b["acc_agg_clients"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # the dropout is real: the same run without it trains to other numbers
    quiet = dropout_run(make_spec, tmp_path, "quiet", "sequential")
    quiet.federation.model.drop.p = 0.0
    for module in quiet.federation.strategy.precision.model.modules():
        if hasattr(module, "p"):
            module.p = 0.0
    run(quiet.federation, on_round=[quiet.on_round])
    assert quiet.records[0]["loss"] != pytest.approx(seq[0]["loss"], rel=1e-3)
    # and a resumed run draws exactly the masks an uninterrupted one draws
    broken = dropout_run(make_spec, tmp_path, "broken", "vectorized")
    with pytest.raises(Crash):
        run(broken.federation, on_round=[broken.on_round, crash_after(2)])
    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2
    run(resumed.federation, on_round=[resumed.on_round])
    assert strip_time(resumed.run_dir.metrics()) == strip_time(runs["vectorized"].run_dir.metrics())


def test_auto_trains_sequentially_what_vmap_cannot_batch(make_spec, monkeypatch):
    """A model whose forward draws from torch's global generator cannot run under vmap (its
    randomness mode is 'error'): auto falls back, an explicit vectorized says why."""
    from fedlab_cli.models import small_cnn

    class Noisy(small_cnn.SmallCNN):
        def forward(self, x):
            return super().forward(x + 0.01 * torch.randn_like(x))

    monkeypatch.setattr(
        small_cnn, "small_cnn", lambda num_classes, in_channels=1: Noisy(num_classes, in_channels)
    )
    auto = build_federation(make_spec(engine={"strategy": "auto"}))
    assert auto.strategy.name == "sequential"
    with pytest.raises(
        FedlabError, match=r"^engine\.strategy: vectorized cannot batch model 'small_cnn'"
    ):
        build_federation(make_spec(engine={"strategy": "vectorized"}))


# -- model.init ---------------------------------------------------------------------------------


def test_model_init_starts_every_client_from_the_file(make_spec, tmp_path):
    torch.manual_seed(123)
    given = build("small_cnn", 10, in_channels=1).state_dict()
    path = tmp_path / "init.pt"
    torch.save(given, path)
    fed = build_federation(make_spec(model={"name": "small_cnn", "init": str(path)}))
    for name, tensor in fed.population.tensors().items():
        for c in range(fed.population.num_clients):
            assert torch.equal(tensor[c], given[name]), (name, c)
    seeded = build_federation(make_spec())
    assert not torch.equal(
        seeded.population.params["features.0.weight"][0], given["features.0.weight"]
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.pop("features.3.weight"), r"has no tensor 'features\.3\.weight'"),
        (
            lambda s: s.update({"features.0.weight": torch.zeros(2, 2)}),
            r"'features\.0\.weight' in .* has shape \(2, 2\), the model's is \(16, 1, 3, 3\)",
        ),
        (
            lambda s: s.update({"extra.weight": torch.zeros(1)}),
            r"has tensor 'extra\.weight' the model",
        ),
    ],
    ids=["missing", "shape", "unexpected"],
)
def test_a_file_that_does_not_fit_names_the_first_bad_key(make_spec, tmp_path, damage, message):
    state = build("small_cnn", 10, in_channels=1).state_dict()
    damage(state)
    path = tmp_path / "init.pt"
    torch.save(state, path)
    with pytest.raises(FedlabError, match=rf"^model\.init: .*{message}"):
        build_federation(make_spec(model={"name": "small_cnn", "init": str(path)}))


def test_a_missing_or_garbage_init_file_is_one_line(make_spec, tmp_path):
    with pytest.raises(FedlabError, match=r"^model\.init: no such file"):
        build_federation(make_spec(model={"name": "small_cnn", "init": str(tmp_path / "no.pt")}))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FedlabError, match=r"^model\.init: .*not a readable state dict"):
        build_federation(make_spec(model={"name": "small_cnn", "init": str(tmp_path / "junk.pt")}))
