"""Every run accounts for what its participants send and receive, and the global scope."""

import pytest
import torch
from support import strip_time

from fedlab_cli.engine.federation import run
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build

# small_cnn on digits (1 channel, 10 classes), counted by hand from its layers
CONV = 16 * 1 * 9 + 32 * 16 * 9 + 64 * 32 * 9  # no conv biases
BN = 2 * (16 + 32 + 64)  # affine
LINEAR = 64 * 10 + 10
PARAMETERS = CONV + BN + LINEAR
FLOAT_BUFFERS = 2 * (16 + 32 + 64)  # running mean and variance (the batch counter is int64)


def finished(make_spec, tmp_path, name, **sections):
    session = RunSession.start(make_spec(**sections), tmp_path / name)
    run(session.federation, on_round=[session.on_round])
    return session, session.finish()


def test_the_hand_counts_are_the_model():
    model = build("small_cnn", 10, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    assert sum(b.numel() for b in model.buffers() if b.is_floating_point()) == FLOAT_BUFFERS


def test_fedavg_sends_every_parameter_and_float_buffer_both_ways(make_spec, tmp_path):
    session, summary = finished(
        make_spec,
        tmp_path,
        "avg",
        data={"num_clients": 6},
        federation={"rounds": 3, "participation": 0.5},
    )
    per_client = 32 * (PARAMETERS + FLOAT_BUFFERS)
    for record in session.records:
        assert record["participants"] == 3
        assert record["uplink_bits"] == record["downlink_bits"] == per_client * 3
    assert summary["uplink_bits"] == summary["downlink_bits"] == per_client * 9
    assert summary["parameters"] == PARAMETERS
    assert summary["uplink_bpp"] == pytest.approx(32 * (PARAMETERS + FLOAT_BUFFERS) / PARAMETERS)
    assert summary["one_time_bits"] == 0


def test_fedbn_counts_only_what_it_shares(make_spec, tmp_path):
    session, summary = finished(make_spec, tmp_path, "bn", method={"name": "fedbn"})
    weights = CONV + 64 * 10  # conv and linear weights; BN and biases stay home
    assert {r["uplink_bits"] for r in session.records} == {32 * weights * 4}
    assert summary["uplink_bpp"] == pytest.approx(32 * weights / PARAMETERS)
    _, textbook = finished(
        make_spec, tmp_path, "bias", method={"name": "fedbn", "share_bias": True}
    )
    assert textbook["uplink_bits"] == 32 * (weights + 10) * 4 * 3


def test_separate_sends_nothing(make_spec, tmp_path):
    _, summary = finished(make_spec, tmp_path, "sep", method={"name": "separate"})
    assert summary["uplink_bits"] == summary["downlink_bits"] == 0 and summary["uplink_bpp"] == 0


def test_global_accuracy_is_the_global_model_on_the_union_of_test_splits(make_spec, tmp_path):
    session, summary = finished(
        make_spec, tmp_path, "global", eval={"global": True}, federation={"rounds": 2}
    )
    fed = session.federation
    union = torch.unique(fed.data.test_idx.flatten())
    model = build("small_cnn", 10, in_channels=1).eval()
    model.load_state_dict({n: t[0] for n, t in fed.population.tensors().items()})
    images = fed.data.dataset.test_images[union].float() / 255
    with torch.no_grad():
        correct = (model(images).argmax(1) == fed.data.dataset.test_labels[union]).sum()
    assert session.records[-1]["acc_global"] == pytest.approx(100.0 * float(correct) / len(union))
    assert len(union) < fed.data.test_idx.numel()  # clients share test samples: counted once
    # the summary gives its final and best value beside the personal scopes
    values = [r["acc_global"] for r in session.records]
    assert summary["final"]["acc_global"] == values[-1]
    assert summary["best"]["acc_global"] == {
        "value": max(values),
        "round": values.index(max(values)),
    }
    without, plain = finished(make_spec, tmp_path, "local", federation={"rounds": 2})
    assert "acc_global" not in without.records[0]
    assert set(plain["final"]) == set(plain["best"]) == {"acc_local", "acc_agg"}
    assert strip_time(without.records) == [
        {k: v for k, v in r.items() if k != "acc_global"} for r in strip_time(session.records)
    ]  # recording it changes nothing else


def test_global_accuracy_needs_a_method_with_a_global_model(make_spec):
    with pytest.raises(FedlabError, match=r"^eval\.global: method 'fedbn' keeps no global model"):
        make_spec(method={"name": "fedbn"}, eval={"global": True})
