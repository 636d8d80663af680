"""RunLock: one owner per directory, named when refused; stale locks are taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from fedlab_cli.engine.lock import LockedError, LockOwner, RunLock, lock_path_for


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_sits_beside_the_directory(tmp_path):
    run = tmp_path / "runs" / "a"
    assert lock_path_for(run) == tmp_path / "runs" / ".a.lock"
    with RunLock(run, "output.dir") as lock:
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert not run.exists()  # a fresh output dir stays absent (and empty)
    assert not lock.path.exists()
    assert not (tmp_path / "runs").exists()  # the parent it created is gone again


def test_a_second_owner_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "a"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = LockOwner(
            holder.pid, socket.gethostname(), "2026-01-01 00:00:00", None, "fedlab run x"
        )
        lock_path_for(run).write_text(owner.to_json())
        with pytest.raises(LockedError) as err:
            RunLock(run, "output.dir").acquire()
        assert str(err.value) == (
            f"output.dir: '{run}' is in use by pid {holder.pid} on {socket.gethostname()} "
            f"since 2026-01-01 00:00:00 (`fedlab run x`); wait for it to finish, or delete "
            f"{lock_path_for(run)} if that process is gone"
        )
        assert lock_path_for(run).read_text() == owner.to_json()  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_the_same_process_cannot_take_it_twice(tmp_path):
    with RunLock(tmp_path / "a"), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / "a").acquire()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path):
    run = tmp_path / "a"
    pid = dead_pid()
    stale = LockOwner(pid, socket.gethostname(), "2026-01-01 00:00:00")
    lock_path_for(run).write_text(stale.to_json())
    with RunLock(run, "--resume") as lock:
        assert lock.notice == (
            f"took over the lock of {run} from pid {pid} on {socket.gethostname()} since "
            "2026-01-01 00:00:00, which is no longer running"
        )
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_reused_pid_is_stale_too(tmp_path):
    """Our own pid, but another process start time: the owner died and the pid came back."""
    run = tmp_path / "a"
    reused = LockOwner(os.getpid(), socket.gethostname(), "then", process_start="1")
    lock_path_for(run).write_text(reused.to_json())
    with RunLock(run) as lock:
        assert lock.notice is not None


def test_another_hosts_lock_is_never_judged_stale(tmp_path):
    run = tmp_path / "a"
    lock_path_for(run).write_text(LockOwner(dead_pid(), "elsewhere", "then").to_json())
    with pytest.raises(LockedError, match=r"in use by pid \d+ on elsewhere"):
        RunLock(run).acquire()


def test_an_old_unreadable_lock_is_stale(tmp_path):
    run = tmp_path / "a"
    path = lock_path_for(run)
    path.write_text("garbage")
    os.utime(path, (0, 0))
    with RunLock(run) as lock:
        assert "an unreadable owner" in lock.notice


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = RunLock(tmp_path / "a").acquire()
    lock.path.unlink()
    lock.path.write_text("someone else's")
    lock.release()
    assert lock.path.read_text() == "someone else's"
