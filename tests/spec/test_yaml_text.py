"""Spec files are small UTF-8 YAML without anchors, aliases or duplicate keys."""

import pytest

from fedlab_cli.errors import FedlabError
from fedlab_cli.spec.load import read_yaml
from fedlab_cli.spec.yaml_text import MAX_DEPTH, SpecSyntaxError, parse_yaml

BASE = "data: {dataset: digits}\nmodel: {name: small_cnn}\nmethod: {name: fedavg}\n"


def error_for(tmp_path, data: bytes) -> str:
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    with pytest.raises(FedlabError) as err:
        read_yaml(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("spec: ")
    return message


@pytest.mark.parametrize(
    "data, fragment",
    [
        (BASE.encode("utf-16"), "is UTF-16 (or UTF-32) text; save it as UTF-8"),
        (BASE.encode("utf-16-le"), "is UTF-16 (or UTF-32) text"),  # no byte-order mark
        (BASE.encode("utf-32"), "is UTF-16 (or UTF-32) text"),
        (bytes(range(256)), "is not a text file (NUL byte at offset 0)"),
        (b"seed: 1\n# caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 13)"),
        (b"# " + b"x" * (1 << 20), "is over 1024 KiB"),
        (b"a: \x07\n", "unacceptable character #x0007"),
    ],
    ids=["utf16", "utf16-no-bom", "utf32", "binary", "latin1", "huge", "control-char"],
)
def test_files_that_are_not_utf8_text_are_refused(tmp_path, data, fragment):
    assert fragment in error_for(tmp_path, data)


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(BASE.encode("utf-8-sig"))
    assert read_yaml(path)["data"] == {"dataset": "digits"}


def test_an_alias_bomb_fails_at_once_naming_the_line(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    message = error_for(tmp_path, ("\n".join(lines) + "\n").encode())
    assert message.endswith(
        "line 1: YAML anchors and aliases (&name, *name) are not allowed in a spec; "
        "write the values out"
    )


def test_a_lone_alias_is_refused_too():
    with pytest.raises(SpecSyntaxError) as err:
        parse_yaml("a: 1\nb: *a\n")
    assert err.value.line == 2


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        ("seed: 1\nseed: 2\n", "seed", 2, 1),
        ("training:\n  lr: 0.1\n  momentum: 0\n  lr: 0.2\n", "lr", 4, 2),
        ("training: {lr: 0.1, lr: 0.2}\n", "lr", 1, 1),
        ("a: 1\n1: x\n'a': 2\n", "a", 3, 1),
    ],
)
def test_duplicate_keys_name_key_and_both_lines(tmp_path, text, key, line, first):
    message = error_for(tmp_path, text.encode())
    assert f"line {line}: duplicate key {key!r} (first given at line {first})" in message


def test_nesting_is_capped_before_recursion_runs_away(tmp_path):
    deep = "a: " + "[" * 20000 + "]" * 20000 + "\n"
    assert f"nested deeper than {MAX_DEPTH} levels" in error_for(tmp_path, deep.encode())
    assert parse_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None


@pytest.mark.parametrize(
    "text, value",
    [("1e-3", 0.001), ("2E5", 200000.0), ("-1.5e+2", -150.0), ("1_0e1", 100.0), ("7", 7)],
)
def test_exponent_floats_are_numbers_as_in_yaml_1_2(text, value):
    parsed = parse_yaml(f"x: {text}")["x"]
    assert parsed == value and type(parsed) is type(value)


def test_too_long_integer_is_one_line(tmp_path):
    message = error_for(tmp_path, b"seed: " + b"9" * 5000 + b"\n")
    assert "unreadable value" in message


def test_python_tags_stay_refused(tmp_path):
    message = error_for(tmp_path, b"a: !!python/object/apply:os.system [ls]\n")
    assert "malformed YAML" in message and "could not determine a constructor" in message


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(FedlabError, match="is a directory, not a spec file"):
        read_yaml(tmp_path)
    with pytest.raises(FedlabError, match="no such file"):
        read_yaml(tmp_path / "nope.yaml")
