"""Damage every run-dir file in turn (truncate, garble, empty, delete): the rundir API names
exactly the damaged file, keeps every intact log record, and never writes while reading; a
damaged newest checkpoint makes ``fedlab run --resume`` go back to the newest intact one (and
say so); none intact is one line, exit 2."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import assert_one_line_refusal, finished_run
from typer.testing import CliRunner

from fedlab_cli.cli import app
from fedlab_cli.engine.rundir import MANIFEST, RunDir, RunDirDamagedError

WHOLE_FILES = ["spec.yaml", "partition.json", "summary.json"]
CHECKPOINTS = [f"checkpoints/round_000{r}.pt" for r in range(3)]
LOGS = ["metrics.jsonl", "inertia.csv"]


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garble(data: bytes) -> bytes:
    """16 bytes in the middle replaced, same size."""
    middle = len(data) // 2
    return data[:middle] + b"\xff" * 16 + data[middle + 16 :]


def empty(data: bytes) -> bytes:
    return b""


DAMAGES = {"truncate": truncate, "garble": garble, "empty": empty, "delete": None}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("damage") / "run")


@pytest.fixture
def copy(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "run")


@pytest.fixture(scope="module")
def interrupted_pristine(tmp_path_factory):
    """Three rounds trained and checkpointed, no summary: what --resume continues."""
    return finished_run(tmp_path_factory.mktemp("interrupted") / "run", finish=False)


@pytest.fixture
def interrupted(interrupted_pristine, tmp_path):
    return shutil.copytree(interrupted_pristine, tmp_path / "run")


def damage(root: Path, name: str, how: str) -> tuple[bytes, bytes | None]:
    path = root / name
    before = path.read_bytes()
    if DAMAGES[how] is None:
        path.unlink()
        return before, None
    after = DAMAGES[how](before)
    path.write_bytes(after)
    return before, after


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", [*WHOLE_FILES, *CHECKPOINTS])
def test_a_damaged_whole_file_is_named(copy, name, how):
    damage(copy, name, how)
    before = snapshot(copy)
    run_dir = RunDir(copy)
    found = run_dir.damage()
    assert [d.file for d in found] == [name]
    if how == "delete":
        assert found[0].problem == "is missing (manifest.json lists it)"
    elif how == "garble":
        assert found[0].problem == "content differs from manifest.json (edited or damaged)"
    else:
        assert found[0].problem.startswith(f"is {(copy / name).stat().st_size} bytes, ")
    if name in CHECKPOINTS:
        intact = run_dir.latest_intact_checkpoint()
        newest_ok = 1 if name == CHECKPOINTS[-1] else 2
        assert intact.round == newest_ok
        assert [d.file for d in intact.damaged_newer] == ([name] if newest_ok == 1 else [])
        run_dir.verify()  # checkpoints are not part of the default verify
    else:
        with pytest.raises(RunDirDamagedError, match=f"^{copy}: {name}: "):
            run_dir.verify()
    assert snapshot(copy) == before  # reading never writes


@pytest.mark.parametrize("how", ["truncate", "garble", "empty"])
def test_a_damaged_manifest_is_named_first(copy, how):
    damage(copy, MANIFEST, how)
    found = RunDir(copy).damage()
    assert [d.file for d in found] == [MANIFEST] and found[0].problem.startswith("unreadable (")


def test_a_deleted_manifest_leaves_a_run_dir_of_the_old_kind(copy):
    """Without a manifest only content checks remain: the intact files pass them."""
    damage(copy, MANIFEST, "delete")
    run_dir = RunDir(copy)
    assert not run_dir.has_manifest and run_dir.damage() == []
    assert run_dir.latest_intact_checkpoint().round == 2


def expected_intact_lines(before: bytes, after: bytes | None, header: bool) -> list[bytes]:
    """The complete lines of ``before`` that survive byte for byte in ``after`` at their place
    (computed from bytes, independently of the reader)."""
    if after is None:
        return []
    kept, offset = [], 0
    for line in before.split(b"\n")[:-1]:
        end = offset + len(line) + 1
        if after[offset:end] == line + b"\n":
            kept.append(line)
        offset = end
    return kept[1:] if header and kept[:1] == [before.split(b"\n")[0]] else kept


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", LOGS)
def test_a_damaged_log_keeps_every_intact_record(copy, name, how):
    before, after = damage(copy, name, how)
    header = name == "inertia.csv"
    run_dir = RunDir(copy)
    found = run_dir.read_metrics() if name == "metrics.jsonl" else run_dir.read_inertia()
    expected = expected_intact_lines(before, after, header)
    if name == "metrics.jsonl":
        import json

        assert found.records == [json.loads(line) for line in expected]
    else:
        assert [",".join(r.values()).encode() for r in found.records] == expected
    if how == "garble":
        assert found.damaged_lines and not found.torn_tail
        assert found.first_damage.file == name
    if how == "truncate":
        assert found.torn_tail or found.damaged_lines == []


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    line=st.integers(0, 2),
    junk=st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b),
)
def test_any_garbage_metrics_line_loses_only_itself(pristine, tmp_path, line, junk):
    import json

    path = pristine / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")[:-1]
    target = tmp_path / f"run-{line}-{junk.hex()}"
    target.mkdir()
    damaged = [*lines[:line], junk, *lines[line + 1 :]]
    (target / "metrics.jsonl").write_bytes(b"\n".join(damaged) + b"\n")
    found = RunDir(target).read_metrics()
    try:
        parsed = json.loads(junk.decode("utf-8"))
        valid = (
            isinstance(parsed, dict) and type(parsed.get("round")) is int and parsed["round"] >= 0
        )
    except (ValueError, UnicodeDecodeError):
        valid = False
    kept = [json.loads(x) for i, x in enumerate(lines) if i != line]
    if valid:
        assert found.damaged_lines == [] and len(found.records) == 3
    else:
        assert found.damaged_lines == [line + 1]
        assert found.records == kept  # every later round survives


def logged(root: Path) -> list[dict]:
    lines = (root / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


@pytest.mark.parametrize("how", ["truncate", "garble", "empty"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(interrupted, pristine, how):
    """The newest checkpoint damaged: resume from the one before, say so, and end with the
    numbers of the uninterrupted run."""
    damage(interrupted, CHECKPOINTS[-1], how)
    result = CliRunner().invoke(app, ["run", "--resume", str(interrupted), "--quiet"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "WARNING: checkpoints/round_0002.pt is damaged" in said
    assert "resuming from round_0001.pt (round 1)" in said
    assert logged(interrupted) == logged(pristine)


def test_no_intact_checkpoint_is_a_one_line_refusal(interrupted):
    for name in CHECKPOINTS:
        damage(interrupted, name, "garble")
    before = snapshot(interrupted)
    result = CliRunner().invoke(app, ["run", "--resume", str(interrupted)])
    line = assert_one_line_refusal(result, "--resume: no checkpoint of ")
    assert "is intact" in line and "start the run again" in line
    assert snapshot(interrupted) == before


@pytest.mark.parametrize(
    "name, how, problem",
    [
        ("spec.yaml", "garble", "content differs from manifest.json (edited or damaged)"),
        ("partition.json", "truncate", "truncated or edited after it was written"),
        ("partition.json", "delete", None),
    ],
)
def test_resume_refuses_an_edited_spec_or_damaged_partition(interrupted, name, how, problem):
    copy = interrupted
    damage(copy, name, how)
    before = snapshot(copy)
    result = CliRunner().invoke(app, ["run", "--resume", str(copy)])
    if problem is None:  # no partition.json: not a run dir any more
        assert_one_line_refusal(result, "--resume: ")
    else:
        assert_one_line_refusal(result, f"{copy}: {name}: ").endswith(problem)
    assert snapshot(copy) == before


def test_a_damaged_metrics_line_loses_no_round(interrupted, pristine):
    """Garbage in the middle of metrics.jsonl: --resume names it, goes back to the checkpoint
    before the lost round and redoes from there, so every round is in the log again."""
    path = interrupted / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = "{not json at all\n"
    path.write_text("".join(lines))
    result = CliRunner().invoke(app, ["run", "--resume", str(interrupted), "--quiet"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "metrics.jsonl: line 2 is damaged" in said and "rounds 1… are redone" in said
    assert logged(interrupted) == logged(pristine)
