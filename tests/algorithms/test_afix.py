"""A_fix (paper Table 1, decision 7): from round R on, middle layers stay as they are.

``freeze_middle_after: R`` works for FedBN and for LIPS (which inherits it): the middle layers'
parameters (weights, biases, BN affine) are neither trained nor aggregated, nor sparsified, while
the first and last layers go on training and being averaged.
"""

import pytest
import torch

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind, Position

R, ROUNDS = 2, 5


@pytest.mark.parametrize(
    "method",
    [{"name": "fedbn"}, {"name": "lips", "interval": 1, "s0": 0.5}],  # LIPS would sparsify always
)
def test_middle_layers_are_bit_identical_from_round_r_on(make_spec, tmp_path, method):
    spec = make_spec(
        method={**method, "freeze_middle_after": R},
        federation={"rounds": ROUNDS},
        training={"local_epochs": 2, "batch_size": 16, "lr": 0.05},
    )
    session = RunSession.start(spec, tmp_path / "run")
    pop = session.federation.population
    after_round: list[dict[str, torch.Tensor]] = []

    def record_params(record):
        after_round.append({n: t.clone() for n, t in pop.params.items()})

    run(session.federation, on_round=[session.on_round, record_params])

    roles = pop.roles
    middle = [n for n in pop.params if roles[n].position is Position.MIDDLE]
    assert {roles[n].kind for n in middle} == {Kind.WEIGHT, Kind.BN}
    # the values every client holds on entering round R (after round R-1's aggregation) ...
    held = after_round[R - 1]
    for t in range(R, ROUNDS):  # ... stay, bit for bit, on every client, after every later round
        for name in middle:
            assert torch.equal(after_round[t][name], held[name]), (t, name)
    # before R the middle layers did move, so the check above can fail
    assert not torch.equal(after_round[0]["features.3.weight"], held["features.3.weight"])

    # first and last layers go on: trained, and (weights) averaged, in every round
    for name in ("features.0.weight", "classifier.weight"):
        for t in range(R, ROUNDS):
            assert not torch.equal(after_round[t][name], after_round[t - 1][name]), (t, name)
            assert torch.equal(after_round[t][name][0], after_round[t][name][-1]), (t, name)
    if method["name"] == "lips":  # sparsified before R, not from R on
        assert "sparsity" in session.records[R - 1]
        assert all("sparsity" not in r for r in session.records[R:])


def test_without_freezing_middle_layers_keep_moving(make_spec, tmp_path):
    session = RunSession.start(
        make_spec(method={"name": "fedbn"}, federation={"rounds": 3}), tmp_path / "run"
    )
    pop = session.federation.population
    seen = []
    middle = pop.params["features.3.weight"]
    run(session.federation, on_round=[lambda record: seen.append(middle.clone())])
    assert not torch.equal(seen[1], seen[2])


def test_freeze_round_must_not_be_negative(make_spec):
    with pytest.raises(FedlabError, match=r"^method\.freeze_middle_after: "):
        make_spec(method={"name": "fedbn", "freeze_middle_after": -1})
