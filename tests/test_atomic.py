"""Atomic writes: umask modes, a full disk as one line with the old file intact, digests."""

import errno
import hashlib
import os
import stat

import pytest
import torch

from fedlab_cli import atomic
from fedlab_cli.atomic import WriteFailedError, atomic_torch_save, atomic_write_text


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_new_files_follow_the_umask_like_open(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pt")
    with open(tmp_path / "c.txt", "w") as handle:  # what the appended files get
        handle.write("x")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.txt": 0o640, "b.pt": 0o640, "c.txt": 0o640}
    assert atomic.current_umask() == 0o027


def test_digest_and_before_replace_see_the_exact_bytes(tmp_path):
    seen = []
    target = tmp_path / "f.txt"

    def before(written):
        seen.append((written, target.exists()))

    written = atomic_write_text(target, "hello", digest=True, before_replace=before)
    assert written.size == 5 and written.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert seen == [(written, False)]  # called before the rename


class FullDisk:
    """A file handle that accepts ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def disk_with_room(monkeypatch):
    def install(room: int) -> None:
        real = os.fdopen
        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode), room))

    return install


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, disk_with_room):
    target = tmp_path / "round_0004.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)
    disk_with_room(1000)
    state = {"w": torch.zeros(100_000)}  # 400 000 bytes of tensor data
    with pytest.raises(WriteFailedError) as err:
        atomic_torch_save(state, target)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{target}: disk full while writing (about 390.6 KiB needed, ")
    assert "the previous version is intact" in message
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["round_0004.pt"]  # no temp file left


def test_full_disk_on_a_new_text_file_says_nothing_was_written(tmp_path, disk_with_room):
    disk_with_room(0)
    with pytest.raises(WriteFailedError, match=r"about 2\.0 KiB needed.*nothing was written"):
        atomic_write_text(tmp_path / "summary.json", "x" * 2048)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "sub" / "a.txt"
    with pytest.raises(WriteFailedError) as err:
        atomic_write_text(target, "x")
    assert str(err.value) == f"{target}: cannot write (Not a directory); nothing was written"


def test_tensor_bytes_counts_nested_tensors():
    state = {"a": torch.zeros(10), "b": [torch.zeros(2, 3, dtype=torch.float64)], "c": 1}
    assert atomic.tensor_bytes(state) == 10 * 4 + 6 * 8


@pytest.mark.parametrize(
    "count, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 2**40, "3.0 TiB")]
)
def test_human_bytes(count, text):
    assert atomic.human_bytes(count) == text
