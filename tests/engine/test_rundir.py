"""Run-dir integrity: the manifest, verify(), the newest intact checkpoint, and logs that keep
every intact record after a damaged line."""

import hashlib
import json
import shutil
import stat

import pytest
import torch
from support import finished_run

from fedlab_cli.engine.rundir import (
    MANIFEST,
    Damage,
    RunDir,
    RunDirDamagedError,
    RunDirNotice,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("pristine") / "run")


@pytest.fixture
def run_dir(pristine, tmp_path):
    return RunDir(shutil.copytree(pristine, tmp_path / "run"))


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_records_every_whole_file_exactly(run_dir):
    root = run_dir.path
    rounds = [
        (f"checkpoints/round_000{i}.pt", f"checkpoints/shards/round_000{i}.clients_0-3.pt")
        for i in range(3)
    ]  # a checkpoint and its one client slice, per round
    names = ["spec.yaml", "partition.json", *(n for pair in rounds for n in pair),
             "summary.json"]  # fmt: skip
    manifest = json.loads((root / MANIFEST).read_text())
    assert list(manifest["files"]) == names
    for name in names:
        assert manifest["files"][name] == {"size": (root / name).stat().st_size,
                                           "sha256": sha(root / name)}  # fmt: skip
    assert run_dir.damage() == []
    run_dir.verify(checkpoints=True)


def test_pruned_checkpoints_leave_the_manifest(run_dir):
    run_dir.save_checkpoint(3, {"x": torch.ones(2)}, keep=2)
    assert [p.name for p in run_dir.checkpoints()] == ["round_0002.pt", "round_0003.pt"]
    listed = [n for n in run_dir.manifest() if n.startswith("checkpoints/")]
    assert listed == [
        "checkpoints/round_0002.pt",
        "checkpoints/shards/round_0002.clients_0-3.pt",  # round 1's slice went with it
        "checkpoints/round_0003.pt",
    ]
    assert sorted(p.name for p in (run_dir.path / "checkpoints" / "shards").iterdir()) == [
        "round_0002.clients_0-3.pt"
    ]


def test_checkpoints_sort_by_round_number_not_name(tmp_path):
    rd = RunDir(tmp_path)
    for r in (9999, 10000, 2):
        rd.save_checkpoint(r, {"r": torch.tensor(r)}, keep=0)
    assert [p.name for p in rd.checkpoints()] == ["round_0002.pt", "round_9999.pt",
                                                  "round_10000.pt"]  # fmt: skip
    assert int(rd.latest_checkpoint()["r"]) == 10000


def test_files_follow_the_umask(run_dir):
    modes = {stat.S_IMODE(p.stat().st_mode) for p in run_dir.path.rglob("*") if p.is_file()}
    assert modes == {0o644}  # the suite runs under umask 022 (checked below)
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    assert mask == 0o022


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: p.write_text(p.read_text() + "# edited\n"), "(grown or edited after it was"),
        (lambda p: p.write_text(p.read_text().replace("lr: 0.05", "lr: 0.09")),
         "content differs from manifest.json (edited or damaged)"),
        (lambda p: p.unlink(), "is missing (manifest.json lists it)"),
    ],
    ids=["grown", "same-size-edit", "deleted"],
)  # fmt: skip
def test_verify_names_an_edited_spec(run_dir, edit, expected):
    edit(run_dir.path / "spec.yaml")
    with pytest.raises(RunDirDamagedError) as err:
        run_dir.verify()
    assert str(err.value).startswith(f"{run_dir.path}: spec.yaml: ")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_verify_reports_the_first_damage_in_resume_order(run_dir):
    for name in ("partition.json", "summary.json"):
        path = run_dir.path / name
        path.write_bytes(path.read_bytes()[:10])
    found = run_dir.damage()
    assert [d.file for d in found] == ["partition.json", "summary.json"]
    assert found[0].problem.startswith("is 10 bytes, manifest.json recorded ")
    assert "truncated" in found[0].problem


def test_a_damaged_manifest_is_named_first(run_dir):
    (run_dir.path / MANIFEST).write_text("{not json")
    assert [d.file for d in run_dir.damage()] == [MANIFEST]


def test_run_dir_without_manifest_still_gets_content_checks(run_dir):
    (run_dir.path / MANIFEST).unlink()
    assert not run_dir.has_manifest and run_dir.damage() == []
    (run_dir.path / "partition.json").write_text('{"num_clients": 3, "clients": []}')
    assert run_dir.damage() == [Damage("partition.json", "lists 0 clients, num_clients says 3")]
    run_dir.write_manifest()  # adopting it records the files as they are now
    assert run_dir.has_manifest and "partition.json" in run_dir.manifest()


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        lambda p: p.write_bytes(b"\x00garbage" * 100),
        lambda p: p.write_bytes(b""),
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_latest_intact_checkpoint_skips_damaged_newer_ones(run_dir, damage):
    damage(run_dir.checkpoint_path(2))
    intact = run_dir.latest_intact_checkpoint()
    assert intact.round == 1 and intact.path == run_dir.checkpoint_path(1)
    expected = torch.load(run_dir.checkpoint_path(1), weights_only=True)
    assert intact.state["next_round"] == expected["next_round"] == 2
    assert [d.file for d in intact.damaged_newer] == ["checkpoints/round_0002.pt"]
    with pytest.raises(RunDirDamagedError) as err:
        run_dir.latest_checkpoint()
    assert str(err.value).startswith(f"{run_dir.path}: checkpoints/round_0002.pt: ")
    assert str(err.value).endswith("; newest intact: checkpoints/round_0001.pt")


def test_a_loadable_but_swapped_checkpoint_is_caught_by_the_manifest(run_dir):
    recorded = run_dir.manifest()["checkpoints/round_0002.pt"]["size"]
    shutil.copy(run_dir.checkpoint_path(0), run_dir.checkpoint_path(2))
    assert torch.load(run_dir.checkpoint_path(2), weights_only=True)  # it does load
    intact = run_dir.latest_intact_checkpoint()
    assert intact.round == 1
    size = run_dir.checkpoint_path(2).stat().st_size
    expected = (
        "content differs from manifest.json (edited or damaged)"
        if size == recorded
        else f"is {size} bytes, manifest.json recorded {recorded} "
        f"({'truncated' if size < recorded else 'grown'} or edited after it was written)"
    )
    assert intact.damaged_newer == [Damage("checkpoints/round_0002.pt", expected)]


def test_no_intact_checkpoint_is_none(run_dir):
    for path in run_dir.checkpoints():
        path.write_bytes(b"")
    assert run_dir.latest_intact_checkpoint() is None
    assert len(run_dir.checkpoint_damage()) == 3


def test_a_deleted_checkpoint_the_manifest_lists_counts_as_damaged(run_dir):
    run_dir.checkpoint_path(2).unlink()
    intact = run_dir.latest_intact_checkpoint()
    assert intact.round == 1
    assert intact.damaged_newer == [
        Damage("checkpoints/round_0002.pt", "is missing (manifest.json lists it)")
    ]


def test_a_garbage_metrics_line_loses_no_later_round(run_dir):
    path = run_dir.path / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = "{garbage"
    path.write_text("\n".join(lines) + "\n")
    found = run_dir.read_metrics()
    assert [r["round"] for r in found.records] == [0, 2]
    assert found.damaged_lines == [2] and not found.torn_tail
    assert found.missing_rounds(2) == [1]
    assert found.first_damage.file == "metrics.jsonl"
    assert found.first_damage.problem.startswith("line 2 is damaged: JSONDecodeError")
    assert [r["round"] for r in run_dir.metrics()] == [0, 2]  # compatible reader
    with pytest.warns(RunDirNotice, match=r"metrics\.jsonl: line 2 is damaged"):
        kept = run_dir.keep_metrics_through(2)
    assert [r["round"] for r in kept] == [0, 2]
    assert [r["round"] for r in run_dir.read_metrics().records] == [0, 2]


@pytest.mark.parametrize(
    "line, reason",
    [("[1, 2]", "a JSON list, not an object"), ('{"round": "1"}', "no integer round"),
     ('{"round": true}', "no integer round"), ("", "JSONDecodeError")],
)  # fmt: skip
def test_wrong_metrics_records_are_damage(run_dir, line, reason):
    path = run_dir.path / "metrics.jsonl"
    path.write_text(path.read_text() + line + "\n")
    found = run_dir.read_metrics()
    assert found.damaged_lines == [4] and reason in found.reasons[4]
    assert len(found.records) == 3


def test_a_torn_last_line_is_not_damage(run_dir):
    path = run_dir.path / "metrics.jsonl"
    path.write_text(path.read_text() + '{"round": 3, "lo')
    found = run_dir.read_metrics()
    assert found.torn_tail and found.damaged_lines == [] and len(found.records) == 3


def test_binary_garbage_in_metrics_is_damage_not_a_crash(run_dir):
    path = run_dir.path / "metrics.jsonl"
    path.write_bytes(b"\xff\xfe\x00\n" + path.read_bytes())
    found = run_dir.read_metrics()
    assert found.damaged_lines == [1] and len(found.records) == 3


def test_inertia_rows_keep_every_intact_row(run_dir):
    path = run_dir.path / "inertia.csv"
    lines = path.read_text().splitlines()
    total = len(lines) - 1
    lines[2] = lines[2].replace(lines[2].split(",")[5], "abc", 1)
    lines[0] = "garbage header"
    path.write_text("\n".join(lines) + "\n")
    found = run_dir.read_inertia()
    assert found.damaged_lines == [1, 3]
    assert "not the inertia.csv header" in found.reasons[1]
    assert "could not convert string to float" in found.reasons[3]
    assert len(found.records) == total - 1
    with pytest.warns(RunDirNotice, match="inertia.csv: line 1 is damaged"):
        run_dir.keep_inertia_through(5)
    assert run_dir.read_inertia().damaged_lines == []


def test_a_full_disk_while_appending_is_one_line(run_dir, monkeypatch):
    import builtins
    import errno

    from fedlab_cli.atomic import WriteFailedError

    real_open = builtins.open
    path = run_dir.path / "metrics.jsonl"
    before = path.read_bytes()

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return Full(handle) if "a" in mode else handle

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(WriteFailedError) as err:
        run_dir.append_metrics({"round": 3})
    assert str(err.value) == (
        f"{path}: disk full while appending 13 B; the earlier lines are intact — free some "
        "space and resume"
    )
    monkeypatch.undo()
    assert path.read_bytes() == before
