"""Property tests: every spec key, and every method parameter, against hostile values.

For each generated spec an oracle written from the documented rules (not from the pydantic
models) says whether the value is acceptable; the spec loader must agree, and when it refuses,
``fedlab run`` must exit 2 with exactly one line, no traceback and no run dir. Seeded and
deterministic (``derandomize``), a few seconds in all.
"""

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import assert_one_line_refusal
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.data.registry import DATASETS
from fedlab_cli.engine.registry import available_methods
from fedlab_cli.errors import FedlabError
from fedlab_cli.models import available_models
from fedlab_cli.spec import budget
from fedlab_cli.spec.load import resolve

MAX_COUNT, MAX_SEED, INT64 = 2**31 - 1, 2**32 - 1, 2**63 - 1
TRAIN, TEST, POOL_TRAIN, POOL_TEST = 30, 20, 1297, 500  # the base spec and digits' pools


def base_spec(out: Path) -> dict:
    return {
        "data": {"dataset": "digits", "num_clients": 4, "train_per_client": TRAIN,
                 "test_per_client": TEST},
        "model": {"name": "small_cnn"},
        "federation": {"rounds": 3},
        "method": {"name": "fedavg"},
        "output": {"dir": str(out)},
    }  # fmt: skip


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def count(lo=1, hi=MAX_COUNT):
    return lambda v: is_int(v) and lo <= v <= hi


def number(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
    def ok(v):
        if not is_number(v):
            return False
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    return ok


def one_of(*values):
    return lambda v: isinstance(v, str) and v in values


def boolean(v) -> bool:
    return isinstance(v, bool)


def path_text(v) -> bool:
    return isinstance(v, str) and v.strip() != "" and "\x00" not in v


def fits(num_clients, train=TRAIN, test=TEST) -> bool:
    have = budget.available_memory()
    return have is None or budget.partition_bytes(num_clients, train, test, 10) <= have


def optional(rule):
    return lambda v: v is None or rule(v)


SPEC_RULES = {
    "data.dataset": lambda v: isinstance(v, str) and v in DATASETS,
    "data.root": path_text,
    "data.download": boolean,
    "data.num_clients": lambda v: count()(v) and fits(v),
    "data.alpha": number(0.01, 1e6),
    "data.train_per_client": optional(lambda v: count(1, POOL_TRAIN)(v) and fits(4, train=v)),
    "data.test_per_client": optional(lambda v: count(1, POOL_TEST)(v) and fits(4, test=v)),
    # the base spec asks for samples per client, which only the Dirichlet split takes
    "data.partition": one_of("dirichlet"),
    "data.classes_per_client": lambda v: v is None,  # pathological only
    "data.transforms": one_of("lips", "ssfl", "fedpm"),
    "data.augment": boolean,
    "model.name": lambda v: isinstance(v, str) and v in available_models(),
    "model.init": optional(path_text),  # whether the file fits is the build's to say
    "federation.rounds": count(),
    "federation.participation": number(0, 1, lo_open=True),
    "training.local_epochs": count(),
    "training.batch_size": count(),
    "training.lr": number(0, lo_open=True),
    "training.momentum": number(0, 1, hi_open=True),
    "training.weight_decay": number(0),
    "training.optimizer": one_of("sgd", "adam"),
    "training.optimizer_state": one_of("reset", "keep"),
    "training.nesterov": boolean,
    "training.eps": lambda v: is_number(v) and v == 1e-8,  # an Adam key; the base is SGD
    "training.grad_clip": optional(number(0, lo_open=True)),
    "eval.global": boolean,
    "eval.batch_size": optional(count()),
    "engine.deterministic_reduce": boolean,
    "engine.collective_timeout": number(0, lo_open=True),
    "method.name": lambda v: isinstance(v, str) and v in available_methods(),
    "eval.every": count(),
    "engine.device": one_of("auto", "cpu", "cuda"),
    "engine.strategy": one_of("auto", "sequential", "vectorized"),
    "engine.chunk_size": optional(count()),
    "engine.autocast": one_of("none", "bf16"),
    "engine.layout": one_of("auto", "channels_last", "contiguous"),
    "engine.tf32": boolean,
    "inertia.ref_rounds": lambda v: (
        isinstance(v, list)
        and all(count(-MAX_COUNT)(r) for r in v)
        and (v == [2] or all(r < 3 for r in v))
    ),
    "seed": count(0, MAX_SEED),
    "output.dir": optional(path_text),
    "output.checkpoint_every": count(),
    "output.keep_checkpoints": count(0),
}

METHOD_RULES = {
    ("fedbn", "share_bias"): boolean,
    ("fedbn", "freeze_middle_after"): optional(count(0, INT64)),
    ("fedrep", "rep_epochs"): count(0, INT64),
    ("pfedsd", "lam"): number(0),
    ("pfedsd", "temperature"): number(0, lo_open=True),
    ("pfedsd", "teacher_mode"): one_of("train", "eval"),
    ("fedcac", "tau"): optional(number(0, 1, lo_open=True)),
    ("fedcac", "beta"): optional(count(1, INT64)),
    ("lips", "s0"): optional(number(0, 1, hi_open=True)),
    ("lips", "interval"): count(1, INT64),
    ("lips", "score"): one_of("grad_x_global", "update_x_local", "magnitude", "random"),
    ("lips", "reinit"): one_of("zero", "original"),
    ("lips", "sparsity"): one_of("transient", "persistent"),
}

EDGES = [0, 1, -1, 2, 3, 5, 1297, 1298, 500, 501, MAX_COUNT, MAX_COUNT + 1, MAX_SEED,
         MAX_SEED + 1, INT64 + 1, -(2**63) - 1, 10**30, 0.0, -0.0, 0.5, 1.0, 0.01, 0.0099,
         1e-300, 5e-324, 1e300, 1e6, 1e6 + 1, math.inf, -math.inf, math.nan, True, False, None,
         "", " ", "\x00", "auto", "cpu", "1e-3", "true", "yes", "digits", "fedbn", "x" * 300,
         [], [2], [0, 2], [1000], [True], [2.0], {}, {"lr": 1}]  # fmt: skip
HOSTILE = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-10, 10), st.booleans(), st.floats(-5, 5)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def set_key(raw: dict, key: str, value) -> dict:
    *sections, last = key.split(".")
    node = raw
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def accepted(raw: dict) -> bool:
    try:
        resolve(raw)
    except FedlabError as err:
        assert "\n" not in str(err)
        return False
    return True


def cli_refuses(tmp_path: Path, raw: dict, key: str) -> None:
    """``fedlab run`` on this spec file: exit 2, one line naming the key, no run dir."""
    out = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw, allow_unicode=True))
    result = CliRunner().invoke(app, ["run", str(spec)])
    line = assert_one_line_refusal(result)
    section = key.split(".")[0]
    assert section in line, (key, line)
    assert not out.exists()


@FUZZ
@given(key=st.sampled_from(sorted(SPEC_RULES)), value=HOSTILE)
def test_every_spec_key_takes_exactly_its_documented_values(tmp_path, key, value):
    raw = set_key(base_spec(tmp_path / "run"), key, value)
    expected = SPEC_RULES[key](value)
    assert accepted(raw) == expected, (key, value)
    if not expected:
        cli_refuses(tmp_path, raw, key)


@FUZZ
@given(rule=st.sampled_from(sorted(METHOD_RULES)), value=HOSTILE)
def test_method_parameters_follow_the_same_rules(tmp_path, rule, value):
    method, field = rule
    raw = base_spec(tmp_path / "run")
    raw["method"] = {"name": method, field: value}
    in_int64 = not is_int(value) or abs(value) <= INT64  # any integer must fit in int64
    expected = in_int64 and METHOD_RULES[rule](value)
    assert accepted(raw) == expected, (rule, value)
    if not expected:
        cli_refuses(tmp_path, raw, "method")


@pytest.mark.parametrize(
    "method, field, value",
    [("fedbn", "share_bias", 1), ("pfedsd", "lam", True), ("pfedsd", "temperature", math.inf),
     ("lips", "interval", 5.0)],
)  # fmt: skip
def test_method_params_models_are_strict_on_their_own(method, field, value):
    """Constructing ``Params`` directly (not through the spec) refuses these too:
    ``MethodParams`` is strict and finite."""
    from pydantic import ValidationError

    from fedlab_cli.engine.registry import load_method

    with pytest.raises(ValidationError):
        load_method(method).Params(**{field: value})
