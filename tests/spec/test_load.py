"""Spec parsing: precedence CLI > file > defaults, and one-line errors naming field and value."""

import pytest

from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import apply_overrides, load_spec, read_yaml


def write(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


BASE = """
data: {dataset: digits, num_clients: 5}
model: {name: small_cnn}
method: {name: fedbn}
training: {lr: 0.2}
"""


def test_precedence_cli_over_file_over_defaults(tmp_path):
    resolved = load_spec(write(tmp_path, BASE), ["training.lr=0.01", "method.share_bias=true"])
    spec = resolved.spec
    assert spec.training.lr == 0.01  # CLI beats file
    assert spec.data.num_clients == 5  # file beats default
    assert spec.training.momentum == 0.9  # default
    assert resolved.method_params.share_bias is True
    method = resolved.to_dict()["method"]
    assert method == {"name": "fedbn", "share_bias": True, "freeze_middle_after": None}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.lrr=0.1"], "training.lrr: unknown key"),
        (["training.lr=fast"], "training.lr: Input should be a valid number"),
        (["data.alpha=0"], "data.alpha: Input should be greater than or equal to 0.01 (got 0)"),
        (["data.alpha=-1.5"], "data.alpha: Input should be greater than or equal to 0.01 (got -1"),
        (["data.num_clients=0"], "data.num_clients: Input should be greater than or equal to 1"),
        (["federation.participation=1.5"], "federation.participation: Input should be less"),
        (["engine.device=tpu"], "engine.device: Input should be 'auto', 'cpu' or 'cuda'"),
        (["method.name=fedx"], "method.name: unknown method 'fedx'"),
        (["method.share_bias=maybe"], "method.share_bias: Input should be a valid boolean"),
        (["method.mu=0.1"], "method.mu: unknown key"),
        (["model.name=vgg7"], "model.name: unknown model (known:"),
        (["data.dataset=svhn"], "data.dataset: unknown dataset (known:"),
        (["seed=-1"], "seed: Input should be greater than or equal to 0"),
        (["training"], "--set: expected key=value, got 'training'"),
        (["training.lr.x=1"], "--set: training.lr is not a section"),
    ],
)
def test_bad_values_name_field_and_value(tmp_path, overrides, message):
    with pytest.raises(FedlabError) as err:
        load_spec(write(tmp_path, BASE), overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_required_section(tmp_path):
    with pytest.raises(FedlabError, match="model: required but missing"):
        load_spec(write(tmp_path, "data: {dataset: digits}\nmethod: {name: fedavg}\n"))


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(FedlabError, match=r"malformed YAML .* at line 3"):
        read_yaml(write(tmp_path, "data:\n  dataset: [digits\nmodel: x\n"))


def test_override_values_are_yaml_scalars():
    data = apply_overrides({}, ["a.b=3", "a.c=true", "a.d=0.5", "e=text", "a.f=[1, 2]"])
    assert data == {"a": {"b": 3, "c": True, "d": 0.5, "f": [1, 2]}, "e": "text"}


def test_a_mapping_override_merges_into_the_files_section(tmp_path):
    """``--set 'training={lr: 0.01}'`` must not reset the file's other training keys."""
    text = BASE.replace("training: {lr: 0.2}", "training: {lr: 0.2, momentum: 0.5}")
    path = write(tmp_path, text)
    spec = load_spec(path, ["training={lr: 0.01}"]).spec
    assert (spec.training.lr, spec.training.momentum) == (0.01, 0.5)
    nested = apply_overrides({"a": {"b": {"c": 1, "d": 2}}}, ["a={b: {c: 3}}"])
    assert nested == {"a": {"b": {"c": 3, "d": 2}}}
    assert apply_overrides({"a": 5}, ["a={b: 1}"]) == {"a": {"b": 1}}  # a scalar is replaced


@pytest.mark.parametrize("key", [".seed", "seed.", "training..lr", " . "])
def test_an_empty_key_part_is_named(key):
    with pytest.raises(FedlabError) as err:
        apply_overrides({}, [f"{key}=1"])
    assert str(err.value) == f"--set: empty key part in {key.strip()!r}; keys look like training.lr"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("&a [1, *a]", "YAML anchors and aliases"),
        ("{lr: 1, lr: 2}", "duplicate key 'lr'"),
        ("[" * 100 + "]" * 100, "nested deeper than"),
    ],
)
def test_override_values_follow_the_file_rules(value, fragment):
    with pytest.raises(FedlabError) as err:
        apply_overrides({}, [f"training={value}"])
    assert str(err.value).startswith("--set: ") and fragment in str(err.value)


def test_invalid_yaml_in_an_override_is_plain_text():
    assert apply_overrides({}, ["output.dir=a: b: c"]) == {"output": {"dir": "a: b: c"}}
