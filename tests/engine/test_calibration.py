"""The one-time calibration round trip: clients' scores at the initial weights, combined."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.method import Method
from fedlab_cli.models import build

NAMES = ["features.0.weight", "classifier.weight"]


class Saliency(Method):
    """Keeps the weighted mean over clients of |g ⊙ w| (SSFL's score) from calibration."""

    weighted = False

    def calibrate(self, population, calibration):
        weights = calibration.data.train_counts if self.weighted else None
        self.scores = calibration.weighted_mean(
            lambda grads, params: {n: (grads[n] * params[n]).abs() for n in NAMES},
            NAMES,
            weights=weights,
        )
        self.params_at_calibration = {n: population.params[n].clone() for n in NAMES}


class WeightedSaliency(Saliency):
    weighted = True


def hand_scores(fed, client):
    """|∂CE/∂w ⊙ w| of one client's whole training set (one full batch), model in eval mode."""
    model = build("small_cnn", 10, in_channels=1).eval()
    model.load_state_dict({n: t[client] for n, t in fed.population.tensors().items()})
    own = fed.data.train_idx[client, : fed.data.train_sizes[client]]
    images = fed.data.dataset.train_images[own].float() / 255
    loss = F.cross_entropy(model(images), fed.data.dataset.train_labels[own])
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in NAMES])
    return {n: (g * params[n]).abs().detach() for n, g in zip(NAMES, grads, strict=True)}


@pytest.mark.parametrize("strategy", ["sequential", "vectorized"])
@pytest.mark.parametrize("method_cls", [Saliency, WeightedSaliency], ids=["uniform", "samples"])
def test_scores_are_the_weighted_mean_of_each_clients_saliency(make_spec, strategy, method_cls):
    spec = make_spec(
        data={"num_clients": 3, "train_per_client": 30},
        training={"batch_size": 30},
        engine={"strategy": strategy},
    )
    fed = build_federation(dataclasses.replace(spec, method_cls=method_cls))
    sizes = torch.tensor(fed.data.train_sizes, dtype=torch.float64)
    weights = sizes if method_cls.weighted else torch.ones(3, dtype=torch.float64)
    per_client = [hand_scores(fed, c) for c in range(3)]
    for name in NAMES:
        expected = sum(w * s[name].double() for w, s in zip(weights, per_client, strict=True))
        torch.testing.assert_close(
            fed.method.scores[name].double(), expected / weights.sum(), rtol=1e-4, atol=1e-9
        )
    # calibration changes no client (eval mode: not even BN statistics) and no training draw
    fresh = build_federation(spec)
    for name, tensor in fresh.population.tensors().items():
        assert torch.equal(fed.population.tensors()[name], tensor), name
    assert torch.equal(fed.generator.get_state(), fresh.generator.get_state())


class Attached(Method):
    """Records which of the two calibration hooks a build calls."""

    def attach_calibration(self, calibration):
        self.attached = calibration

    def calibrate(self, population, calibration):
        self.calibrated = calibration


@pytest.mark.parametrize("calibrate", [True, False])
def test_every_build_attaches_the_calibration_only_a_fresh_one_calibrates(make_spec, calibrate):
    """A resumed run (``calibrate=False``) skips the round trip but may still run it later."""
    spec = dataclasses.replace(make_spec(), method_cls=Attached)
    fed = build_federation(spec, calibrate=calibrate)
    attached = fed.method.attached
    assert attached.population is fed.population and attached.data is fed.data
    assert hasattr(fed.method, "calibrated") == calibrate
    if calibrate:
        assert fed.method.calibrated is attached
