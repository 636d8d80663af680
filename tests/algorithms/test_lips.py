"""LIPS: the sparsification schedule, the per-client masks, every ablation switch, resume.

The digits ``small_cnn`` has two middle conv weights, ``features.3.weight`` (32x16x3x3 = 4608)
and ``features.7.weight`` (64x32x3x3 = 18432); its first conv and the classifier stay dense.
"""

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
import yaml
from support import Crash, assert_same_run, crash_after, digits_context

from algorithms.lips import LIPS, Schedule, mean_pairwise_jaccard
from fedlab_cli.engine.federation import run
from fedlab_cli.engine.population import Population
from fedlab_cli.engine.session import RunSession
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import Kind, Position, build
from fedlab_cli.models.flops import layer_macs
from fedlab_cli.spec.load import load_spec

MIDDLE = {"features.3.weight": 4608, "features.7.weight": 18432}
PRESETS = Path(__file__).resolve().parents[2] / "presets"


class Spy(LIPS):
    """LIPS that keeps copies of what each hook saw, per round."""

    def setup(self, population, context):
        super().setup(population, context)
        self.init = {n: t.clone() for n, t in population.params.items()}
        self.rec: dict[int, dict] = {}
        self.steps: list[tuple[int, int, dict, dict]] = []

    def before_local_training(self, population, clients, round_index):
        self.round = round_index
        self.rec[round_index] = {"before": clone(population.params)}
        super().before_local_training(population, clients, round_index)

    def after_step(self, block, params, optimizer_state):
        super().after_step(block, params, optimizer_state)
        for i, client in enumerate(block.clients):
            mids = {n: params[n][i].clone() for n in MIDDLE}
            moms = {n: optimizer_state[n]["momentum_buffer"][i].clone() for n in MIDDLE}
            self.steps.append((self.round, client, mids, moms))

    def after_local_training(self, population, clients, round_index, trace):
        rec = self.rec[round_index]
        rec["trained"] = clone(population.params)
        rec["grads"] = clone(trace.last_grads)
        super().after_local_training(population, clients, round_index, trace)

    def after_aggregate(self, population, round_index):
        rec = self.rec[round_index]
        rec["w_glob"] = clone(population.tensors())
        super().after_aggregate(population, round_index)
        rec["post"] = clone(population.tensors())


def clone(tensors):
    return {n: t.clone() for n, t in tensors.items()}


def lips_spec(make_spec, rounds=1, **method):
    return make_spec(
        method={"name": "lips", "s0": 0.5, **method},
        federation={"rounds": rounds},
        training={"local_epochs": 1, "batch_size": 16, "lr": 0.05},
    )


def run_spy(resolved, tmp_path, name="run"):
    session = RunSession.start(dataclasses.replace(resolved, method_cls=Spy), tmp_path / name)
    run(session.federation, on_round=[session.on_round])
    return session, session.federation.method


def test_middle_weights_are_picked_by_role():
    model = build("small_cnn", 10, in_channels=1)
    middle = {
        n for n, r in model.roles.items() if r.position is Position.MIDDLE and r.kind is Kind.WEIGHT
    }
    assert middle == set(MIDDLE)
    assert all(dict(model.named_parameters())[n].numel() == k for n, k in MIDDLE.items())


# -- schedule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s0, interval, rounds, expected",
    [
        (0.5, 5, 20, {0: 0.5, 5: 0.375, 10: 0.25, 15: 0.125}),
        (0.7, 3, 10, {0: 0.7, 3: 0.49, 6: 0.28, 9: 0.07}),
        (0.3, 1, 4, {0: 0.3, 1: 0.225, 2: 0.15, 3: 0.075}),
    ],
)
def test_schedule_rounds_and_sparsity(s0, interval, rounds, expected):
    schedule = Schedule(s0, interval, rounds)
    assert [t for t in range(rounds) if schedule.sparsifies(t)] == list(expected)
    for t, s in expected.items():
        assert schedule.sparsity(t) == pytest.approx(s)
        assert 1 - schedule.density(t) == pytest.approx(s)


def test_no_pruning_when_s0_is_zero():
    assert not any(Schedule(0.0, 5, 20).sparsifies(t) for t in range(20))


def test_k_equals_the_reference_for_the_paper_settings():
    """k = int(numel * d_t) with the d0 the reference was given (0.5, 0.3), for every middle
    tensor of the paper's models, T = 300, ΔT = 5; ``1 - s_t`` would be off by one sometimes."""
    off_by_one = 0
    for model, classes, s0, d0 in [("vgg6", 10, 0.5, 0.5), ("resnet8", 100, 0.7, 0.3),
                                   ("resnet10", 200, 0.7, 0.3)]:  # fmt: skip
        with torch.device("meta"):
            net = build(model, classes)
        numels = {
            p.numel()
            for n, p in net.named_parameters()
            if net.roles[n].position is Position.MIDDLE and net.roles[n].kind is Kind.WEIGHT
        }
        schedule = Schedule(s0, 5, 300)
        for t, numel in itertools.product(range(0, 300, 5), numels):
            assert schedule.keep(numel, t) == int(numel * (d0 + (1.0 - d0) * (t / 300)))
            off_by_one += schedule.keep(numel, t) != int(numel * (1 - s0 * (1 - t / 300)))
    assert off_by_one > 0  # why the reference's form is used


def test_metrics_record_the_schedule_and_exact_densities(make_spec, tmp_path):
    """s0 0.7, ΔT 3, T 7: sparsify at 0, 3, 6 with d = 0.3, 0.6, 0.9; k = int(numel*d)."""
    session, _ = run_spy(lips_spec(make_spec, rounds=7, s0=0.7, interval=3), tmp_path)
    keep = {0: (1382, 5529), 3: (2764, 11059), 6: (4147, 16588)}  # by hand: 4608*.3 = 1382.4 ...
    sparsity = {0: 0.7, 3: 0.4, 6: 0.1}
    for record in session.records:
        t = record["round"]
        if t not in keep:
            assert "sparsity" not in record and "density_by_layer" not in record
            continue
        assert record["sparsity"] == pytest.approx(sparsity[t])
        for (name, numel), k in zip(MIDDLE.items(), keep[t], strict=True):
            assert record["density_by_layer"][name] == pytest.approx(k / numel)
    # the last round sparsified: each client's middle tensors hold exactly k non-zeros
    pop = session.federation.population
    for (name, _), k in zip(MIDDLE.items(), keep[6], strict=True):
        assert pop.params[name].flatten(1).count_nonzero(1).tolist() == [k] * pop.num_clients


# -- masks -------------------------------------------------------------------------------------


def assert_top_k(score, kept, k, what):
    assert int(kept.sum()) == k, what
    assert score[kept].min() >= score[~kept].max(), what


def test_grad_x_global_keeps_top_k_of_grad_times_global(make_spec, tmp_path):
    session, spy = run_spy(lips_spec(make_spec), tmp_path)
    rec = spy.rec[0]
    pop = session.federation.population
    masks = {}
    for name, numel in MIDDLE.items():
        k = numel // 2  # s0 0.5 at t = 0
        w_glob, post = rec["w_glob"][name], rec["post"][name]
        assert torch.equal(w_glob[0], w_glob[-1])  # FedBN synced every client to the aggregate
        for c in range(pop.num_clients):
            kept = post[c] != 0
            score = (rec["grads"][name][c] * w_glob[c]).abs()
            assert_top_k(score.flatten(), kept.flatten(), k, (name, c))
            assert torch.equal(post[c][kept], w_glob[c][kept])
        masks[name] = (post != 0).flatten(1)
        assert not torch.equal(masks[name][0], masks[name][1])  # per-client masks
    # first layer, last layer, BN (affine and statistics) and biases: bit-identical
    for name, before in rec["w_glob"].items():
        if name not in MIDDLE:
            assert torch.equal(rec["post"][name], before), name
    # metrics: density k/numel and the mean pairwise Jaccard overlap, pair by pair
    record = session.records[0]
    overlaps = []
    for name, m in masks.items():
        assert record["density_by_layer"][name] == 0.5
        pairs = [
            float((m[i] & m[j]).sum()) / float((m[i] | m[j]).sum())
            for i, j in itertools.combinations(range(len(m)), 2)
        ]
        overlaps.append(sum(pairs) / len(pairs))
        assert record["mask_jaccard_by_layer"][name] == pytest.approx(overlaps[-1], abs=1e-6)
    assert record["mask_jaccard"] == pytest.approx(sum(overlaps) / 2, abs=1e-6)


def test_update_x_local_keeps_top_k_of_update_times_local(make_spec, tmp_path):
    _, spy = run_spy(lips_spec(make_spec, score="update_x_local"), tmp_path)
    rec = spy.rec[0]
    for name, numel in MIDDLE.items():
        after, before = rec["trained"][name], rec["before"][name]
        for c in range(len(after)):
            score = ((after[c] - before[c]) * after[c]).abs()
            kept = rec["post"][name][c] != 0
            assert_top_k(score.flatten(), kept.flatten(), numel // 2, (name, c))


def test_magnitude_gives_every_client_the_same_mask(make_spec, tmp_path):
    _, spy = run_spy(lips_spec(make_spec, score="magnitude"), tmp_path)
    rec = spy.rec[0]
    for name, numel in MIDDLE.items():
        kept = (rec["post"][name] != 0).flatten(1)
        assert all(torch.equal(kept[0], kept[c]) for c in range(1, len(kept)))
        assert_top_k(rec["w_glob"][name][0].abs().flatten(), kept[0], numel // 2, name)


def test_random_masks_differ_between_clients_and_follow_the_seed(make_spec, tmp_path):
    resolved = lips_spec(make_spec, score="random")
    masks = []
    for attempt in ("a", "b"):
        _, spy = run_spy(resolved, tmp_path, attempt)
        masks.append({n: spy.rec[0]["post"][n] != 0 for n in MIDDLE})
    for name, numel in MIDDLE.items():
        kept = masks[0][name].flatten(1)
        assert kept.sum(1).tolist() == [numel // 2] * len(kept)
        assert not torch.equal(kept[0], kept[1])
        assert torch.equal(masks[0][name], masks[1][name])  # same seed, same masks


def test_original_reinit_refills_with_the_initial_global_weights(make_spec, tmp_path):
    _, spy = run_spy(lips_spec(make_spec, reinit="original"), tmp_path)
    rec = spy.rec[0]
    for name, numel in MIDDLE.items():
        w_glob, post, init = rec["w_glob"][name], rec["post"][name], spy.init[name]
        assert torch.equal(init[0], init[-1])  # every client started from the same weights
        for c in range(len(post)):
            score = (rec["grads"][name][c] * w_glob[c]).abs().flatten()
            kept = torch.zeros(numel, dtype=torch.bool)
            kept[score.argsort(descending=True)[: numel // 2]] = True
            kept = kept.view_as(post[c])
            assert torch.equal(post[c][kept], w_glob[c][kept])
            assert torch.equal(post[c][~kept], init[0][~kept])
            assert not torch.equal(w_glob[c][~kept], init[0][~kept])


# -- transient vs persistent -------------------------------------------------------------------


def test_transient_training_regrows_pruned_weights(make_spec, tmp_path):
    _, spy = run_spy(lips_spec(make_spec, rounds=2, interval=2), tmp_path)
    pruned = {n: spy.rec[0]["post"][n] == 0 for n in MIDDLE}
    first_steps = {}
    for t, client, params, _ in spy.steps:
        if t == 1 and client not in first_steps:
            first_steps[client] = params
    assert len(first_steps) == 4
    for client, params in first_steps.items():
        for name in MIDDLE:
            zeroed = pruned[name][client]
            assert int(zeroed.sum()) == MIDDLE[name] // 2
            assert torch.all(params[name][zeroed] != 0), (client, name)


def test_persistent_masks_weights_and_momentum_until_the_next_round(make_spec, tmp_path):
    """ΔT 3, T 4: masks from round 0 hold through rounds 1-3; round 3 draws new ones."""
    session, spy = run_spy(
        lips_spec(make_spec, rounds=4, interval=3, sparsity="persistent"), tmp_path
    )
    pruned = {n: spy.rec[0]["post"][n] == 0 for n in MIDDLE}
    checked = 0
    for t, client, params, momentum in spy.steps:
        if t == 0:
            continue
        for name in MIDDLE:
            zeroed = pruned[name][client]
            assert torch.all(params[name][zeroed] == 0), (t, client, name)
            assert torch.all(momentum[name][zeroed] == 0), (t, client, name)
            assert torch.all(params[name][~zeroed] != 0), (t, client, name)
            checked += 1
    assert checked == 3 * 4 * 2 * 2  # rounds x clients x steps (1 epoch of 2 batches) x layers
    for t in (1, 2):  # the after-aggregation models (acc_agg) are masked too
        for name in MIDDLE:
            assert torch.all(spy.rec[t]["post"][name][pruned[name]] == 0)
    # round 3 sparsifies again at s = 0.5 * (1 - 3/4): new masks of k = int(numel * 0.875).
    # Entries every client had pruned average to 0 and score 0, so some kept entries are 0.
    for name, numel in MIDDLE.items():
        k = int(numel * 0.875)
        assert spy.masks[name].flatten(1).sum(1).tolist() == [k] * 4
        assert torch.all(spy.rec[3]["post"][name][~spy.masks[name]] == 0)
        assert session.records[3]["density_by_layer"][name] == k / numel

    # cost: 4 rounds of equal length, round 0 dense, rounds 1-3 at density 1/2 in both layers
    macs_first, macs_mid, macs_last = 16 * 9 * 64, (32 * 16 * 9 * 64, 64 * 32 * 9 * 16), 640
    total = macs_first + sum(macs_mid) + macs_last
    half = (macs_first + macs_last + sum(macs_mid) / 2) / total
    summary = session.finish()
    assert summary["mean_density"] == pytest.approx((1 + 3 * 0.5) / 4)
    assert summary["train_flops_rel"] == pytest.approx((1 + 3 * half) / 4)


def test_forward_macs_of_the_small_cnn(make_spec, tmp_path):
    fed = RunSession.start(lips_spec(make_spec), tmp_path / "r").federation
    macs = layer_macs(fed.method.context.architecture, (1, 8, 8))
    # 8x8 input: conv 1->16 at 8x8, conv 16->32 at 8x8, pool, conv 32->64 at 4x4, linear 64->10
    expected = {
        "features.0": 16 * 9 * 64,
        "features.3": 32 * 16 * 9 * 64,
        "features.7": 64 * 32 * 9 * 16,
        "classifier": 640,
    }
    assert macs == expected


# -- spec, defaults, resume --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("s0", 1.0),
        ("s0", -0.1),
        ("interval", 0),
        ("score", "fisher"),
        ("reinit", "kaiming"),
        ("sparsity", "local"),
    ],
)
def test_bad_parameters_are_rejected(make_spec, key, value):
    with pytest.raises(FedlabError, match=rf"^method\.{key}: "):
        make_spec(method={"name": "lips", key: value})


@pytest.mark.parametrize("dataset, s0", [("cifar10", 0.5), ("cifar100", 0.7),
                                         ("tinyimagenet", 0.7), ("digits", 0.5),
                                         ("synthetic_cifar100", 0.7)])  # fmt: skip
def test_s0_defaults_per_dataset(dataset, s0):
    model = build("small_cnn", 10, in_channels=1)
    method = LIPS(LIPS.Params())
    context = digits_context(dataset, rounds=300)
    method.setup(Population.replicate(model, 2, torch.device("cpu")), context)
    assert method.schedule.s0 == s0


@pytest.mark.parametrize(
    "dataset, model, alpha, train, s0",
    [
        ("cifar10", "vgg6", 0.5, 100, 0.5),
        ("cifar100", "resnet8", 0.1, 100, 0.7),
        ("tinyimagenet", "resnet10", 0.1, 300, 0.7),
    ],
)
def test_presets_are_the_fedbn_presets_with_lips(dataset, model, alpha, train, s0):
    lips = yaml.safe_load((PRESETS / f"{dataset}_lips.yaml").read_text())
    fedbn = yaml.safe_load((PRESETS / f"{dataset}_fedbn.yaml").read_text())
    assert {k: v for k, v in lips.items() if k != "method"} == {
        k: v for k, v in fedbn.items() if k != "method"
    }
    resolved = load_spec(PRESETS / f"{dataset}_lips.yaml")
    spec, params = resolved.spec, resolved.method_params
    assert (spec.model.name, spec.data.alpha, spec.data.train_per_client) == (model, alpha, train)
    assert spec.data.test_per_client == 400 and spec.federation.rounds == 300
    assert (params.s0, params.interval, params.score, params.reinit, params.sparsity) == (
        s0,
        5,
        "grad_x_global",
        "zero",
        "transient",
    )


def test_quickstart_lips_differs_from_quickstart_only_in_method():
    lips = yaml.safe_load((PRESETS / "quickstart_lips.yaml").read_text())
    base = yaml.safe_load((PRESETS / "quickstart.yaml").read_text())
    assert lips.pop("method")["name"] == "lips" and base.pop("method")["name"] == "fedbn"
    assert lips == base


def test_mean_pairwise_jaccard_by_hand():
    masks = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert float(mean_pairwise_jaccard(masks)) == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    assert mean_pairwise_jaccard(masks[:1]) is None


@pytest.mark.parametrize(
    "method",
    [{"score": "random", "sparsity": "persistent"}, {"score": "update_x_local"}],
)
def test_resume_equals_uninterrupted_run(make_spec, tmp_path, method):
    spec = make_spec(
        method={"name": "lips", "interval": 2, **method},
        federation={"rounds": 5},
        output={"checkpoint_every": 2, "keep_checkpoints": 0},
    )
    full = RunSession.start(spec, tmp_path / "full")
    run(full.federation, on_round=[full.on_round])
    full_summary = full.finish()

    broken = RunSession.start(spec, tmp_path / "broken")
    with pytest.raises(Crash):  # dies after round 2; its last checkpoint is round 1
        run(broken.federation, on_round=[broken.on_round, crash_after(2)])
    resumed = RunSession.resume(tmp_path / "broken")
    assert resumed.federation.next_round == 2
    run(resumed.federation, on_round=[resumed.on_round])
    assert_same_run(full, full_summary, resumed, resumed.finish())
