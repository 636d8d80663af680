"""Separate: no aggregation, so both accuracies are the same and clients drift apart."""

import torch

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession


def test_separate_never_aggregates(make_spec, tmp_path):
    session = RunSession.start(make_spec(method={"name": "separate"}), tmp_path / "run")
    run(session.federation, on_round=[session.on_round])
    weights = session.federation.population.params["classifier.weight"]
    assert not torch.allclose(weights[0], weights[1])
    for record in session.records:
        assert record["acc_agg"] == record["acc_local"]
