"""A corpus of hostile inputs, each through ``fedlab`` in-process: exit 2 (or the documented
code), exactly one line on stderr, no traceback, no run dir or other file left behind."""

from pathlib import Path

import pytest
from support import assert_one_line_refusal
from typer.testing import CliRunner

from fedlab_cli.cli import app

GOOD = """\
data: {dataset: digits, num_clients: 3, alpha: 0.5, train_per_client: 20, test_per_client: 10}
model: {name: small_cnn}
federation: {rounds: 2}
training: {local_epochs: 1, batch_size: 10}
method: {name: fedavg}
"""


def with_line(key_line: str) -> bytes:
    """GOOD plus one more top-level section (as its own YAML line)."""
    return (GOOD + key_line + "\n").encode()


def replaced(old: str, new: str) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new).encode()


def alias_bomb(levels: int = 12) -> bytes:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return (GOOD + "\n".join(lines) + "\n").encode()


SPEC_FILES = {
    # encodings and binary
    "utf16": (GOOD.encode("utf-16"), "is UTF-16 (or UTF-32) text; save it as UTF-8"),
    "utf16-le-no-bom": (GOOD.encode("utf-16-le"), "is UTF-16 (or UTF-32) text"),
    "utf32": (GOOD.encode("utf-32"), "is UTF-16 (or UTF-32) text"),
    "binary": (bytes(range(256)) * 8, "is not a text file (NUL byte at offset 0)"),
    "png-header": (b"\x89PNG\r\n\x1a\n" + bytes(64), "is not a text file"),
    "latin1": (("# \xe9t\xe9\n" + GOOD).encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
    "control-char": (with_line("seed: 1\x07"), "unacceptable character #x0007"),
    "huge-file": (b"#" * (1 << 20) + b"\n" + GOOD.encode(), "is over 1024 KiB"),
    # YAML structure
    "alias-bomb": (alias_bomb(), "line 6: YAML anchors and aliases (&name, *name) are not"),
    "lone-anchor": (with_line("eval: &e {every: 1}"), "YAML anchors and aliases"),
    "merge-key-alias": (with_line("base: &b {every: 1}\neval: {<<: *b}"), "anchors and aliases"),
    "duplicate-section": (with_line("model: {name: vgg6}"), "duplicate key 'model' (first given"),
    "duplicate-nested": (
        with_line("inertia:\n  ref_rounds: [0]\n  ref_rounds: [1]"),
        "line 8: duplicate key 'ref_rounds' (first given at line 7)",
    ),
    "duplicate-flow": (
        replaced("batch_size: 10", "batch_size: 10, batch_size: 20"),
        "line 4: duplicate key 'batch_size' (first given at line 4)",
    ),
    "deep-lists": (with_line("eval: " + "[" * 5000 + "]" * 5000), "nested deeper than 32 levels"),
    "deep-maps": (with_line("eval: " + "{a: " * 200 + "1" + "}" * 200), "nested deeper than"),
    "unclosed": (b"data: {dataset: digits\nmodel: x\n", "malformed YAML"),
    "tab-indent": (b"data:\n\tdataset: digits\n", "malformed YAML"),
    "python-tag": (with_line("seed: !!python/object/apply:os.system [ls]"), "malformed YAML"),
    "unhashable-key": (with_line("? [a, b]\n: 1"), "found unhashable key"),
    "top-level-list": (b"- data\n- model\n", "must hold a mapping, got list"),
    "top-level-scalar": (b"fedavg\n", "must hold a mapping, got str"),
    "empty": (b"", "data: required but missing"),
    "only-comments": (b"# nothing here\n", "data: required but missing"),
    # numbers and types
    "huge-int-literal": (with_line("seed: " + "9" * 5000), "unreadable value"),
    "bad-date": (with_line("seed: 2001-13-45"), "unreadable value (month must be in 1..12)"),
    "seed-2^32": (with_line("seed: 4294967296"), "seed: Input should be less than or equal to"),
    "seed-float": (with_line("seed: 1.0"), "seed: Input should be a valid integer (got 1.0)"),
    "epochs-true": (
        replaced("local_epochs: 1", "local_epochs: true"),
        "training.local_epochs: Input should be a valid integer (got True)",
    ),
    "clients-float": (
        replaced("num_clients: 3", "num_clients: 3.0"),
        "data.num_clients: Input should be a valid integer (got 3.0)",
    ),
    "clients-billion": (
        replaced("num_clients: 3", "num_clients: 1000000000"),
        "data.num_clients: 1000000000 clients x (20 + 10) samples need",
    ),
    "clients-2^31": (
        replaced("num_clients: 3", "num_clients: 2147483648"),
        "data.num_clients: Input should be less than or equal to 2147483647",
    ),
    "alpha-inf": (
        replaced("alpha: 0.5", "alpha: .inf"),
        "data.alpha: Input should be a finite number (got inf)",
    ),
    "alpha-tiny": (
        replaced("alpha: 0.5", "alpha: 1e-300"),
        "data.alpha: Input should be greater than or equal to 0.01 (got 1e-300)",
    ),
    "alpha-nan": (replaced("alpha: 0.5", "alpha: .nan"), "data.alpha: Input should be a finite"),
    "lr-inf": (
        replaced("batch_size: 10", "batch_size: 10, lr: .inf"),
        "training.lr: Input should be a finite number (got inf)",
    ),
    "lr-bool": (
        replaced("batch_size: 10", "batch_size: 10, lr: true"),
        "training.lr: Input should be a valid number (got True)",
    ),
    "lr-text": (
        replaced("batch_size: 10", "batch_size: 10, lr: fast"),
        "training.lr: Input should be a valid number (got 'fast')",
    ),
    "download-yes-text": (
        replaced("alpha: 0.5", "alpha: 0.5, download: 'yes'"),
        "data.download: Input should be a valid boolean",
    ),
    "ref-rounds-late": (
        with_line("inertia: {ref_rounds: [1000]}"),
        "inertia.ref_rounds: reference round 1000 is never reached",
    ),
    "split-too-large": (
        replaced("train_per_client: 20", "train_per_client: 5000"),
        "data.train_per_client: 5000 exceeds the pool of 1297 samples",
    ),
    "unknown-section": (with_line("trainin: {lr: 0.1}"), "trainin: unknown key"),
    "unknown-key": (
        replaced("batch_size: 10", "batch_size: 10, lrr: 0.1"),
        "training.lrr: unknown key",
    ),
    "method-param-bool-for-int": (
        replaced("{name: fedavg}", "{name: fedrep, rep_epochs: true}"),
        "method.rep_epochs: Input should be a valid integer",
    ),
    "method-param-inf": (
        replaced("{name: fedavg}", "{name: pfedsd, lam: .inf}"),
        "method.lam: Input should be a finite number (got inf)",
    ),
    "method-unknown": (replaced("{name: fedavg}", "{name: fedx}"), "method.name: unknown method"),
    "dataset-huge-name": (
        replaced("dataset: digits", "dataset: " + "x" * 100000),
        "data.dataset: unknown dataset",
    ),
}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("data, fragment", SPEC_FILES.values(), ids=SPEC_FILES.keys())
def test_hostile_spec_files(tmp_path, data, fragment):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(data)
    before = files_under(tmp_path)
    result = invoke("run", spec, "--set", f"output.dir={tmp_path / 'run'}")
    line = assert_one_line_refusal(result, fragment)
    assert len(line) < 400  # a huge value is shortened, not echoed
    assert files_under(tmp_path) == before


OVERRIDES = {
    "empty-key-part": ([".seed=1"], "--set: empty key part in '.seed'"),
    "trailing-dot": (["seed.=1"], "--set: empty key part in 'seed.'"),
    "no-equals": (["seed"], "--set: expected key=value, got 'seed'"),
    "not-a-section": (["training.batch_size.x=1"], "--set: training.batch_size is not a section"),
    "alias": (["training=&a {lr: 1}"], "--set: YAML anchors and aliases"),
    "duplicate": (["training={lr: 1, lr: 2}"], "--set: duplicate key 'lr'"),
    "long-number": (["seed=" + "9" * 5000], "--set: unreadable value"),
    "nan": (["data.alpha=.nan"], "data.alpha: Input should be a finite number"),
    "merge-keeps-file-keys": (
        ["training={local_epochs: true}"],
        "training.local_epochs: Input should be a valid integer",
    ),
    "out-empty": (["output.dir="], "output.dir: empty path"),
    "out-nul": (["output.dir=a\0b"], "output.dir: path contains a NUL byte"),
    "out-proc": (["output.dir=/proc/fedlab"], "output.dir: /proc is a kernel interface"),
    "out-sys": (["output.dir=/sys/fedlab"], "output.dir: /sys is a kernel interface"),
    "out-long-name": (["output.dir=" + "n" * 300], "a path component is longer than 255"),
}


@pytest.mark.parametrize("sets, fragment", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_hostile_overrides(tmp_path, sets, fragment):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    before = files_under(tmp_path)
    args = [arg for item in sets for arg in ("--set", item)]
    out = (
        []
        if any(s.startswith("output.dir") for s in sets)
        else ["--set", f"output.dir={tmp_path / 'run'}"]
    )
    assert_one_line_refusal(invoke("run", spec, *out, *args), fragment)
    assert files_under(tmp_path) == before


def test_output_dir_under_a_file_and_compare_out_a_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    (tmp_path / "f").write_text("x")
    before = files_under(tmp_path)
    run = invoke("run", spec, "--set", f"output.dir={tmp_path / 'f' / 'run'}")
    assert_one_line_refusal(run, "output.dir: ")
    compare = invoke("compare", "fedavg", "--preset", spec, "--out", tmp_path / "f")
    assert_one_line_refusal(compare, "--out: exists and is a file")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "seeds",
    ["4294967296", "-1", "0,0", "a", "", "1e3", "9" * 5000],
    ids=lambda s: s[:12] or "empty",
)
def test_hostile_compare_seeds(tmp_path, seeds):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    result = invoke(
        "compare", "fedavg", "--preset", spec, "--seeds", seeds, "--out", tmp_path / "c"
    )
    assert_one_line_refusal(result, "--seeds: ")
    assert not (tmp_path / "c").exists()


def test_a_spec_that_is_a_directory_or_missing(tmp_path):
    assert_one_line_refusal(invoke("run", tmp_path), "is a directory, not a spec file")
    assert_one_line_refusal(invoke("run", tmp_path / "nope.yaml"), "spec: no such file")
