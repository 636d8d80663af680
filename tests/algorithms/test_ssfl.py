"""SSFL: saliency by hand, the global top-k, the held mask, its bits, warm-up and resume."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import Crash, assert_same_run, crash_after, digits_context

from algorithms.ssfl import SSFL, global_top_k
from fedlab_cli.data.partition import ClientSplits
from fedlab_cli.engine.build import build_federation
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import build

# small_cnn on digits (1 channel, 10 classes), counted from its layers
PRUNABLE = {
    "features.0.weight": 16 * 1 * 9,
    "features.3.weight": 32 * 16 * 9,
    "features.7.weight": 64 * 32 * 9,
    "classifier.weight": 64 * 10,
}
N_PRUNABLE = sum(PRUNABLE.values())
OTHER = 2 * (16 + 32 + 64) + 10 + 2 * (16 + 32 + 64)  # BN affine, head bias, BN mean and var


def ssfl_spec(make_spec, method=None, **sections):
    return make_spec(method={"name": "ssfl", **(method or {})}, **sections)


def finished(resolved, tmp_path, name="run", method_cls=None):
    if method_cls is not None:
        resolved = dataclasses.replace(resolved, method_cls=method_cls)
    session = RunSession.start(resolved, tmp_path / name)
    run(session.federation, on_round=[session.on_round])
    return session, session.finish()


# -- the prunable set ---------------------------------------------------------------------------


def test_prunable_weights_are_every_conv_and_linear_weight_of_resnet18_gn():
    """Stem, 1x1 shortcuts and classifier included; GroupNorm and the head bias never."""
    model = build("resnet18_gn", 10, in_channels=3)
    expected = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
    }
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "linear.weight"} <= expected
    method = SSFL(SSFL.Params())
    method.setup(Population.replicate(model, 1, torch.device("cpu")), digits_context())
    assert set(method.prunable) == expected
    # SPARSE_FL.md §1.4: 11 164 352 prunable, 9 610 other parameters for 10 classes
    assert sum(method.numel.values()) == 11_164_352
    assert sum(p.numel() for p in model.parameters()) - 11_164_352 == 9_610


# -- scores and the mask ------------------------------------------------------------------------

SIZES = (10, 25, 40)


def unequal_splits() -> ClientSplits:
    """Three clients of 10, 25 and 40 training images (so the two weightings differ)."""
    order = np.random.default_rng(0).permutation(1297)
    starts = np.cumsum((0, *SIZES))
    return ClientSplits(
        train=[order[a:b].astype(np.int64) for a, b in itertools.pairwise(starts)],
        test=[np.arange(i * 20, (i + 1) * 20, dtype=np.int64) for i in range(3)],
    )


def hand_saliency(fed, client):
    """|∂CE/∂w ⊙ w| of one client on its whole training set (its first batch: batch ≥ size),
    model in eval mode, by torch.autograd.grad on a fresh copy of the model."""
    model = build("small_cnn", 10, in_channels=1).eval()
    model.load_state_dict({n: t[client] for n, t in fed.population.tensors().items()})
    own = torch.as_tensor(fed.splits.train[client])
    images = fed.data.dataset.train_images[own].float() / 255
    loss = F.cross_entropy(model(images), fed.data.dataset.train_labels[own])
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in PRUNABLE])
    return {n: (g * params[n]).abs().detach() for n, g in zip(PRUNABLE, grads, strict=True)}


def hand_mask(scores, density):
    """Keep what is ≥ the ⌊n·d⌋-th largest score, found by sorting all scores."""
    flat = torch.cat([s.flatten() for s in scores.values()]).double()
    threshold = flat.sort(descending=True).values[math.floor(flat.numel() * density) - 1]
    return {n: s.double() >= threshold for n, s in scores.items()}, threshold


def assert_same_mask(found, scores, density):
    """``found`` is the hand top-k of ``scores``, but for entries the float32 rounding of the
    scores may put on either side of the threshold (within 1e-5 of it, relatively)."""
    expected, threshold = hand_mask(scores, density)
    assert sum(int(m.sum()) for m in found.values()) == math.floor(N_PRUNABLE * density)
    for name, mask in expected.items():
        differ = found[name] != mask
        assert torch.all((scores[name][differ] - threshold).abs() <= 1e-5 * threshold), name


@pytest.mark.parametrize(
    "weighting, batches, strategy",
    [
        ("uniform", 1, "sequential"),
        ("samples", 1, "sequential"),
        ("samples", 3, "sequential"),
        ("uniform", 3, "vectorized"),
    ],
)
def test_combined_scores_are_the_weighted_mean_of_hand_saliencies(
    make_spec, weighting, batches, strategy
):
    """I full batches each give the same score: their mean must be it (not I times it)."""
    spec = ssfl_spec(
        make_spec,
        {"score_weighting": weighting, "score_batches": batches},
        data={"num_clients": 3},
        training={"batch_size": 64},
        engine={"strategy": strategy},
    )
    fed = build_federation(spec, splits=unequal_splits(), calibrate=False)
    weights = SIZES if weighting == "samples" else (1, 1, 1)
    hand = [hand_saliency(fed, c) for c in range(3)]
    scores = fed.method.combined_scores()
    for name in PRUNABLE:
        expected = sum(w * h[name].double() for w, h in zip(weights, hand, strict=True))
        torch.testing.assert_close(
            scores[name].double(), expected / sum(weights), rtol=1e-4, atol=1e-10
        )
    # with these sizes the two weightings differ far beyond the tolerance
    head = [h["classifier.weight"] for h in hand]
    uniform = sum(head) / 3
    samples = sum(w * h for w, h in zip(SIZES, head, strict=True)) / sum(SIZES)
    assert not torch.allclose(uniform, samples, rtol=1e-2)


def test_calibration_masks_every_client_with_the_hand_top_k(make_spec):
    spec = ssfl_spec(
        make_spec, {"density": 0.2}, data={"num_clients": 3}, training={"batch_size": 64}
    )
    initial = build_federation(spec, splits=unequal_splits(), calibrate=False)
    fed = build_federation(spec, splits=unequal_splits())
    hand = [hand_saliency(initial, c) for c in range(3)]
    combined = {
        n: sum(w * h[n].double() for w, h in zip(SIZES, hand, strict=True)) / sum(SIZES)
        for n in PRUNABLE
    }
    assert_same_mask(fed.method.mask, combined, 0.2)  # ⌊n·d⌋ kept: no ties in float scores
    for name, mask in fed.method.mask.items():
        for c in range(3):
            w0 = initial.population.params[name][c]
            assert torch.equal(fed.population.params[name][c], torch.where(mask, w0, 0.0))
    for name, tensor in initial.population.params.items():  # nothing else changes
        if name not in PRUNABLE:
            assert torch.equal(fed.population.params[name], tensor)


@pytest.mark.parametrize("density", [0.5, 0.37, 0.2, 0.1, 1 / 3, 1.0])
def test_global_top_k_keeps_floor_n_d_with_one_threshold_across_layers(density):
    g = torch.Generator().manual_seed(1)
    # layers of different score scales: one threshold gives them different densities
    scores = {
        "a": torch.rand(7, 5, generator=g) * 3,
        "b": torch.rand(101, generator=g),
        "c": torch.rand(3, 4, 4, generator=g) * 0.5,
    }
    masks = global_top_k(scores, density)
    flat = torch.cat([s.flatten() for s in scores.values()])
    assert len(set(flat.tolist())) == flat.numel()  # no ties
    keep = math.floor(flat.numel() * density)
    assert sum(int(m.sum()) for m in masks.values()) == keep
    kept = torch.cat([s[m] for s, m in zip(scores.values(), masks.values(), strict=True)])
    dropped = torch.cat([s[~m] for s, m in zip(scores.values(), masks.values(), strict=True)])
    assert dropped.numel() == 0 or kept.min() > dropped.max()
    if 0.2 <= density < 1:
        assert masks["a"].float().mean() > masks["b"].float().mean() > masks["c"].float().mean()


def test_global_top_k_keeps_every_tie_at_the_threshold():
    scores = {"a": torch.tensor([5.0, 4.0, 3.0, 3.0]), "b": torch.tensor([3.0, 1.0])}
    masks = global_top_k(scores, 0.5)  # k = 3: the third largest is 3.0, held by three entries
    assert masks["a"].tolist() == [True, True, True, True]
    assert masks["b"].tolist() == [True, False]


# -- the mask is held through training and aggregation ------------------------------------------


class HeldSpy(SSFL):
    """Counts, after every local step and every aggregation, pruned entries that are not 0."""

    def setup(self, population, context):
        super().setup(population, context)
        self.checks = {"step": 0, "aggregate": 0}
        self.nonzero: list[tuple] = []

    def after_step(self, block, params, optimizer_state):
        super().after_step(block, params, optimizer_state)
        if not self.mask:
            return
        self.checks["step"] += len(block.clients)
        for name, mask in self.mask.items():
            pruned = ~mask.expand_as(params[name])
            tensors = {"param": params[name], **optimizer_state.get(name, {})}
            for what, tensor in tensors.items():
                if torch.any(tensor[pruned] != 0):
                    self.nonzero.append(("step", block.round, name, what))

    def aggregate(self, population, participants, weights, round_index):
        super().aggregate(population, participants, weights, round_index)
        if not self.mask:
            return
        self.checks["aggregate"] += 1
        for name, mask in self.mask.items():
            weight = population.params[name]
            if torch.any(weight[~mask.expand_as(weight)] != 0):
                self.nonzero.append(("aggregate", round_index, name, "param"))


OPTIMIZERS = {
    "sgd-momentum-wd": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
    "adam-wd": {"optimizer": "adam", "lr": 0.01, "weight_decay": 5e-4},
    # dense warm-up with kept state: momentum at pruned entries is non-zero when the mask comes
    "sgd-kept-after-warmup": {"optimizer": "sgd", "momentum": 0.9, "optimizer_state": "keep"},
}


@pytest.mark.parametrize("strategy", ["sequential", "vectorized"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_entries_stay_exactly_zero(make_spec, tmp_path, strategy, optimizer):
    warmup = 1 if optimizer == "sgd-kept-after-warmup" else 0
    spec = ssfl_spec(
        make_spec,
        {"density": 0.3, "warmup_rounds": warmup},
        federation={"rounds": 3, "participation": 0.5},
        training={"local_epochs": 1, "grad_clip": 10.0, **OPTIMIZERS[optimizer]},
        engine={"strategy": strategy},
    )
    session, _ = finished(spec, tmp_path, method_cls=HeldSpy)
    spy = session.federation.method
    steps = 2 * 2  # participants x batches (30 samples, batch 16) per round
    assert spy.checks == {"step": steps * (3 - warmup), "aggregate": 3 - warmup}
    assert spy.nonzero == []
    # ... and training did move the kept entries
    moved = [
        bool(torch.any(session.federation.population.params[n][0][m] != 0))
        for n, m in spy.mask.items()
    ]
    assert all(moved)


def test_first_step_clips_the_masked_gradient(make_spec, tmp_path):
    """One participant, one full batch: w1 = m ⊙ (w0 − lr·(clip(g ⊙ m) + wd·w0)), the clipping
    norm taken over the masked gradient (pruned entries get no gradient, as in the official
    pruning re-parametrisation)."""
    spec = ssfl_spec(
        make_spec,
        {"density": 0.5},
        data={"num_clients": 2},
        federation={"rounds": 1, "participation": 0.5},
        training={
            "local_epochs": 1,
            "batch_size": 30,
            "lr": 0.1,
            "momentum": 0.0,
            "weight_decay": 5e-4,
            "grad_clip": 0.05,
        },
        engine={"strategy": "sequential"},
    )
    fed = build_federation(spec)
    (client,) = fed.participants(0)
    mask = fed.method.mask
    w0 = {n: t[client].clone().requires_grad_(True) for n, t in fed.population.params.items()}
    buffers = {n: t[client].clone() for n, t in fed.population.buffers.items()}
    own = fed.data.train_idx[client, : fed.data.train_sizes[client]]
    images = fed.data.dataset.train_images[own].float() / 255
    logits = fed.strategy.one_model(w0, buffers, images, train=True)
    loss = F.cross_entropy(logits, fed.data.dataset.train_labels[own])
    grads = dict(zip(w0, torch.autograd.grad(loss, list(w0.values())), strict=True))
    holders = []
    for name, g in grads.items():
        holder = torch.zeros_like(g, requires_grad=True)
        holder.grad = g * mask[name] if name in mask else g.clone()
        holders.append(holder)
    assert torch.nn.utils.clip_grad_norm_(holders, 0.05) > 0.05  # the bound bites
    fed.run_round()
    for (name, start), holder in zip(w0.items(), holders, strict=True):
        expected = start.detach() - 0.1 * (holder.grad + 5e-4 * start.detach())
        if name in mask:
            expected = torch.where(mask[name], expected, 0.0)
        torch.testing.assert_close(
            fed.population.params[name][client], expected, rtol=1e-5, atol=1e-7, msg=name
        )


# -- communication ------------------------------------------------------------------------------


def entropy(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@pytest.mark.parametrize("density", [0.5, 0.1])
def test_bits_are_the_kept_values_plus_every_other_element(make_spec, tmp_path, density):
    spec = ssfl_spec(
        make_spec,
        {"density": density},
        data={"num_clients": 6},
        federation={"rounds": 2, "participation": 0.5},
    )
    session, summary = finished(spec, tmp_path)
    mask = session.federation.method.mask
    kept = sum(int(m.sum()) for m in mask.values())
    assert kept == math.floor(N_PRUNABLE * density)
    per_client = 32 * (kept + OTHER)
    for record in session.records:
        assert record["uplink_bits"] == record["downlink_bits"] == per_client * 3
    assert summary["uplink_bits"] == per_client * 6
    parameters = N_PRUNABLE + 2 * (16 + 32 + 64) + 10
    assert summary["uplink_bpp"] == pytest.approx(per_client / parameters)
    d = kept / N_PRUNABLE
    assert summary["density"] == pytest.approx(d)
    assert summary["density_by_layer"] == {
        n: pytest.approx(int(mask[n].sum()) / k) for n, k in PRUNABLE.items()
    }
    assert summary["prunable"] == N_PRUNABLE
    assert summary["one_time"] == {
        "score_uplink_bits": 6 * 32 * N_PRUNABLE,
        "mask_broadcast_bits": N_PRUNABLE,
        "mask_broadcast_entropy_bits": pytest.approx(N_PRUNABLE * entropy(d)),
    }
    assert summary["one_time_bits"] == 6 * 32 * N_PRUNABLE + N_PRUNABLE


# -- warm-up ------------------------------------------------------------------------------------


class WarmupSpy(SSFL):
    def before_local_training(self, population, clients, round_index):
        if round_index == self.params.warmup_rounds:
            self.seen = {n: t.clone() for n, t in population.tensors().items()}
        super().before_local_training(population, clients, round_index)


def test_warmup_trains_dense_then_scores_at_the_global_weights(make_spec, tmp_path):
    spec = ssfl_spec(
        make_spec,
        {"density": 0.5, "warmup_rounds": 2, "score_weighting": "uniform"},
        data={"num_clients": 3},
        federation={"rounds": 3},
        training={"batch_size": 64},
    )
    session, summary = finished(spec, tmp_path, method_cls=WarmupSpy)
    fed = session.federation
    spy = fed.method
    dense = 32 * (N_PRUNABLE + OTHER) * 3
    assert [r["uplink_bits"] for r in session.records[:2]] == [dense, dense]
    assert all(bool(torch.all(spy.seen[n] != 0)) for n in PRUNABLE)  # dense before round 2
    # the mask is the hand top-k of the clients' saliency at the global weights after round 1
    probe = build_federation(spec, splits=fed.splits, calibrate=False)
    for name, tensor in probe.population.tensors().items():
        tensor.copy_(spy.seen[name])
    hand = [hand_saliency(probe, c) for c in range(3)]
    assert_same_mask(spy.mask, {n: sum(h[n].double() for h in hand) / 3 for n in PRUNABLE}, 0.5)
    kept = sum(int(m.sum()) for m in spy.mask.values())
    assert session.records[2]["uplink_bits"] == 32 * (kept + OTHER) * 3
    parameters = N_PRUNABLE + 2 * (16 + 32 + 64) + 10
    assert summary["one_time"]["model_broadcast_bits"] == 32 * (parameters + 2 * 112)
    assert summary["one_time_bits"] == 3 * 32 * N_PRUNABLE + N_PRUNABLE + 32 * (parameters + 224)


# -- resume and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [0, 3])
def test_resume_equals_uninterrupted_run(make_spec, tmp_path, warmup):
    """warm-up 3: the run resumes at round 2, before its mask exists, and finds it at round 3."""
    spec = ssfl_spec(
        make_spec,
        {"density": 0.3, "warmup_rounds": warmup},
        federation={"rounds": 4, "participation": 0.5},
        output={"checkpoint_every": 2, "keep_checkpoints": 0},
    )
    full, full_summary = finished(spec, tmp_path, "full")
    broken = RunSession.start(spec, tmp_path / "broken")
    with pytest.raises(Crash):
        run(broken.federation, on_round=[broken.on_round, crash_after(2)])
    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2
    assert bool(resumed.federation.method.mask) == (warmup == 0)
    run(resumed.federation, on_round=[resumed.on_round])
    assert_same_run(full, full_summary, resumed, resumed.finish())


@pytest.mark.parametrize(
    "method, sections, message",
    [
        ({"density": 0}, {}, r"^method\.density: Input should be greater than 0 \(got 0\)$"),
        ({"density": 1.5}, {}, r"^method\.density: Input should be less than or equal to 1"),
        ({"score_batches": 0}, {}, r"^method\.score_batches: Input should be greater than"),
        ({"score_weighting": "size"}, {}, r"^method\.score_weighting: Input should be 'uniform'"),
        ({"warmup_rounds": -1}, {}, r"^method\.warmup_rounds: Input should be greater than"),
        ({"sparsity": 0.5}, {}, r"^method\.sparsity: unknown key"),
    ],
)
def test_bad_keys_are_one_line_spec_errors(make_spec, method, sections, message):
    with pytest.raises(FedlabError, match=message):
        ssfl_spec(make_spec, method, **sections)


@pytest.mark.parametrize(
    "method, message",
    [
        ({"warmup_rounds": 3}, r"^method\.warmup_rounds: must be below federation\.rounds \(3\)"),
        ({"density": 1e-5}, r"^method\.density: keeps no weight of the model's 23824 prunable"),
    ],
)
def test_bad_combinations_fail_before_a_run_dir_exists(make_spec, tmp_path, method, message):
    spec = ssfl_spec(make_spec, method, federation={"rounds": 3})
    with pytest.raises(FedlabError, match=message):
        RunSession.start(spec, tmp_path / "never")
    assert not (tmp_path / "never").exists()
