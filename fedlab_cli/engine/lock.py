"""One writer per run directory: a lock file naming its owner, created exclusively.

Two ``fedlab run`` with one ``output.dir``, or ``--resume`` while the run still trains, used to
interleave their lines in ``metrics.jsonl``. A ``RunLock`` is a small JSON file (owner pid,
host, process start time, start time, command) created with ``O_EXCL``, so exactly one process
gets it. A second one is refused with one line naming the owner. A lock left by a process that
died (same host, pid gone or reused) is stale and is taken over with a notice.

The lock file sits *beside* the directory it guards (``runs/.NAME.lock`` for ``runs/NAME``), so
holding it does not make a fresh output dir non-empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlab_cli.errors import FedlabError


class LockedError(FedlabError):
    """Another live process holds the lock."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock, as written in the lock file."""

    pid: int
    host: str
    started: str
    process_start: str | None = None
    command: str = ""

    @classmethod
    def me(cls) -> LockOwner:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.strftime("%Y-%m-%d %H:%M:%S"),
            process_start=process_start_time(os.getpid()),
            command=" ".join(["fedlab", *sys.argv[1:]])[:300],
        )

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                host=str(data["host"]),
                started=str(data["started"]),
                process_start=data.get("process_start"),
                command=str(data.get("command", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(self.__dict__) + "\n"

    def is_alive(self) -> bool | None:
        """True or False for a process on this host; None when it cannot be told (another
        host shares the directory)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        if self.process_start is not None:
            now = process_start_time(self.pid)
            if now is not None and now != self.process_start:
                return False  # the pid was reused by a later process
        return True

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started}"


def lock_path_for(directory: Path) -> Path:
    """Where the lock of ``directory`` lives: beside it, hidden, in the same parent."""
    absolute = Path(os.path.abspath(directory))
    return absolute.parent / f".{absolute.name}.lock"


class RunLock:
    """Exclusive ownership of a directory for one process; use as a context manager.

    ``what`` names the directory in messages (``output.dir``, ``--resume``, ``--out``).
    ``notice`` is set after ``acquire`` when a stale lock was taken over.
    """

    def __init__(self, directory: Path, what: str = "run dir") -> None:
        self.directory = Path(directory)
        self.path = lock_path_for(self.directory)
        self.what = what
        self.notice: str | None = None
        self._held: tuple[int, int] | None = None  # (device, inode) of our lock file
        self._content = ""
        self._created_dirs: list[Path] = []

    def acquire(self) -> RunLock:
        self._make_parent()
        me = LockOwner.me()
        for _ in range(100):  # each pass takes the lock, clears a stale one, or waits a little
            if self._try_create(me):
                return self
            owner_text = _read(self.path)
            if owner_text is None:
                continue  # released between our attempt and the read: retry
            owner = LockOwner.parse(owner_text)
            if owner is None and _age_seconds(self.path) < FRESH_SECONDS:
                time.sleep(0.05)  # being written by its new owner right now
                continue
            if owner is not None and owner.is_alive() is not False:
                self._remove_created_dirs()
                raise LockedError(
                    f"{self.what}: {str(self.directory)!r} is in use by {owner.describe()} "
                    f"(`{owner.command}`); wait for it to finish, or delete {self.path} if "
                    "that process is gone"
                )
            if self._clear_stale(owner_text):
                who = owner.describe() if owner else "an unreadable owner"
                self.notice = (
                    f"took over the lock of {self.directory} from {who}, which is no longer running"
                )
        self._remove_created_dirs()
        raise LockedError(f"{self.what}: could not take the lock {self.path} (contended)")

    def release(self) -> None:
        """Remove the lock file if it is still ours; remove parents this lock created if
        they are still empty."""
        if self._held is None:
            return
        try:
            info = os.stat(self.path)
            ours = (info.st_dev, info.st_ino) == self._held and _read(self.path) == self._content
            if ours:  # an inode number alone can be reused by a replacement file
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._held = None
        self._remove_created_dirs()

    @property
    def held(self) -> bool:
        return self._held is not None

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ------------------------------------------------------------ internals

    def _make_parent(self) -> None:
        missing = []
        parent = self.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FedlabError(
                f"{self.what}: cannot create {str(self.path.parent)!r} ({err.strerror})"
            ) from None
        self._created_dirs = missing  # deepest first

    def _try_create(self, me: LockOwner) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise FedlabError(
                f"{self.what}: cannot create the lock {self.path} ({err.strerror})"
            ) from None
        self._content = me.to_json()
        with os.fdopen(fd, "w") as handle:
            handle.write(self._content)
            handle.flush()
            os.fsync(handle.fileno())
            info = os.fstat(handle.fileno())
        self._held = (info.st_dev, info.st_ino)
        return True

    def _clear_stale(self, stale_text: str) -> bool:
        """Remove the stale lock only if it is still the very file we judged stale: two
        processes clearing at once must not remove the lock the faster one just took."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            with open(fd, closefd=False) as handle:
                same_content = handle.read() == stale_text
            if same_file and same_content:
                os.unlink(self.path)
            return True
        except FileNotFoundError:
            return True
        finally:
            os.close(fd)

    def _remove_created_dirs(self) -> None:
        for directory in self._created_dirs:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty
        self._created_dirs = []


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a reused pid
    from the original owner; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


FRESH_SECONDS = 5.0
"""An unreadable lock younger than this is being written by its owner, not stale."""


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return None
