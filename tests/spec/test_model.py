"""Strict, finite, bounded spec values: YAML's guesses are refused instead of converted."""

import math

import numpy as np
import pytest

from fedlab_cli.data.registry import DATASETS
from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import apply_overrides, resolve
from fedlab_cli.spec.types import MAX_SEED, MIN_ALPHA

BASE = {
    "data": {"dataset": "digits", "num_clients": 4, "train_per_client": 30, "test_per_client": 20},
    "model": {"name": "small_cnn"},
    "federation": {"rounds": 3},
    "method": {"name": "fedavg"},
}

COUNTS = [
    "data.num_clients",
    "data.train_per_client",
    "data.test_per_client",
    "federation.rounds",
    "training.local_epochs",
    "training.batch_size",
    "eval.every",
    "engine.chunk_size",
    "output.checkpoint_every",
]
FLOATS = ["data.alpha", "federation.participation", "training.lr", "training.momentum",
          "training.weight_decay"]  # fmt: skip
BOOLS = ["data.download", "data.augment", "engine.tf32"]


def error(overrides: list[str]) -> str:
    with pytest.raises(FedlabError) as err:
        resolve(apply_overrides(BASE, overrides))
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("key", [*COUNTS, "output.keep_checkpoints", "seed"])
@pytest.mark.parametrize("value", ["true", "2.0", "'2'"])
def test_counts_take_integers_only(key, value):
    assert error([f"{key}={value}"]).startswith(f"{key}: Input should be a valid integer (got ")


@pytest.mark.parametrize("key", COUNTS)
def test_counts_are_bounded_so_numpy_can_hold_them(key):
    message = error([f"{key}={2**31}"])
    assert message == f"{key}: Input should be less than or equal to 2147483647 (got {2**31})"


@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_every_float_is_finite(key, value):
    assert error([f"{key}={value}"]).startswith(f"{key}: Input should be a finite number (got ")


@pytest.mark.parametrize("key", FLOATS)
def test_a_bool_is_not_a_number(key):
    assert error([f"{key}=true"]) == f"{key}: Input should be a valid number (got True)"


def test_an_int_is_a_fine_float():
    spec = resolve(apply_overrides(BASE, ["training.lr=1", "data.alpha=2"])).spec
    assert spec.training.lr == 1.0 and isinstance(spec.training.lr, float)
    assert spec.data.alpha == 2.0


@pytest.mark.parametrize("key", BOOLS)
@pytest.mark.parametrize("value", ["1", "'yes'", "0.0"])
def test_bools_take_true_or_false_only(key, value):
    assert error([f"{key}={value}"]).startswith(f"{key}: Input should be a valid boolean")


def test_seed_range_is_numpys():
    assert resolve(apply_overrides(BASE, [f"seed={MAX_SEED}"])).spec.seed == 2**32 - 1
    assert error([f"seed={MAX_SEED + 1}"]) == (
        "seed: Input should be less than or equal to 4294967295 (got 4294967296)"
    )


@pytest.mark.parametrize("alpha", ["1e-300", "0.009", "0", "-1"])
def test_alpha_is_bounded_away_from_zero(alpha):
    assert error([f"data.alpha={alpha}"]).startswith(
        "data.alpha: Input should be greater than or equal to 0.01"
    )


@pytest.mark.parametrize("classes", [2, 10, 200])
def test_numpys_dirichlet_stays_finite_at_the_minimum_alpha(classes):
    """The documented reason for MIN_ALPHA, measured: no NaN share for 20 000 clients."""
    shares = np.random.RandomState(0).dirichlet(np.full(classes, MIN_ALPHA), 20000)
    assert np.isfinite(shares).all()
    assert np.allclose(shares.sum(axis=1), 1.0)


def test_below_the_minimum_numpy_does_produce_nan():
    """...while a tenth of it already gives NaN rows with 10 classes (the fewest we have)."""
    with np.errstate(all="ignore"):
        shares = np.random.RandomState(0).dirichlet(np.full(10, MIN_ALPHA / 10), 100000)
    assert not np.isfinite(shares).all()
    assert min(info.num_classes for info in DATASETS.values()) == 10


def test_ref_rounds_must_be_reached():
    assert error(["inertia.ref_rounds=[1, 3]"]) == (
        "inertia.ref_rounds: reference round 3 is never reached: rounds are 0-based and "
        "federation.rounds is 3 (got [1, 3])"
    )
    assert resolve(apply_overrides(BASE, ["inertia.ref_rounds=[0, 2]"])).spec.inertia.ref_rounds


def test_the_default_ref_round_is_fine_for_short_runs():
    """Default [2] with one round records no cos_ref (as before) rather than refusing the
    run — also when resuming, where spec.yaml spells the default out."""
    spec = resolve(apply_overrides(BASE, ["federation.rounds=1"])).spec
    assert spec.inertia.ref_rounds == [2]
    again = resolve(apply_overrides(BASE, ["federation.rounds=1", "inertia.ref_rounds=[2]"]))
    assert again.spec.inertia.ref_rounds == [2]


def test_per_client_requests_are_checked_against_the_pool_before_loading():
    assert error(["data.dataset=cifar10", "data.train_per_client=50001"]) == (
        "data.train_per_client: 50001 exceeds the pool of 50000 samples (got 50001)"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("output.dir=''", "output.dir: empty path (got '')"),
        ("output.dir=3", "output.dir: expected a path as text (got 3)"),
        ("data.root=a\0b", "data.root: path contains a NUL byte (got 'a\\x00b')"),
    ],
)
def test_paths_are_non_empty_text(override, message):
    assert error([override]) == message


def test_method_params_are_strict_and_finite_too():
    base = {**BASE, "method": {"name": "pfedsd"}}
    for value, message in [
        ("true", "method.lam: Input should be a valid number (got True)"),
        (".inf", "method.lam: Input should be a finite number (got inf)"),
        ("'0.5'", "method.lam: Input should be a valid number (got '0.5')"),
    ]:
        with pytest.raises(FedlabError) as err:
            resolve(apply_overrides(base, [f"method.lam={value}"]))
        assert str(err.value) == message
    params = resolve(apply_overrides(base, ["method.lam=1"])).method_params
    assert params.lam == 1.0 and not math.isnan(params.lam)


def test_huge_values_are_shortened_in_the_message():
    message = error([f"data.dataset={'x' * 5000}"])
    assert len(message) < 300 and message.endswith("...)")
    assert error([f"seed={10**400}"]).endswith("(got an integer of 401 digits)")
