"""Whole-file writes that never leave a half-written file: temp file, fsync, rename.

Used by the run directory, the compare outputs and the dataset cache alike. Three promises:

- the destination is either the old file or the complete new one, never a mix;
- a new file gets the mode the user's umask gives, as ``open`` would (``mkstemp`` alone makes
  it a private 0600, unlike the run dir's appended files);
- a full disk (or any other write failure) is a one-line ``FedlabError`` naming the file and,
  for a full disk, about how much space the file needed — not torch's ``unexpected pos``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedlab_cli.errors import FedlabError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Written:
    """What an atomic write put on disk, known before the file is renamed into place."""

    size: int
    sha256: str | None


class WriteFailedError(FedlabError):
    """A file could not be written (full disk, permissions); the previous version is intact."""


class _CountingWriter:
    """A binary sink that counts (and optionally hashes) what passes through it, and keeps the
    first ``OSError``: ``torch.save`` turns a failed write into an opaque ``RuntimeError``."""

    def __init__(self, handle, digest: bool) -> None:
        self._handle = handle
        self._hash = hashlib.sha256() if digest else None
        self.size = 0
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            count = self._handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise
        view = memoryview(data)
        if self._hash is not None:
            self._hash.update(view)
        self.size += view.nbytes
        return count

    def flush(self) -> None:
        self._handle.flush()

    @property
    def sha256(self) -> str | None:
        return self._hash.hexdigest() if self._hash is not None else None


@contextmanager
def atomic_open(
    path: Path,
    size_hint: int | None = None,
    digest: bool = False,
    before_replace: Callable[[Written], None] | None = None,
) -> Iterator[_CountingWriter]:
    """A binary sink whose content replaces ``path`` only once the block finishes.

    ``size_hint`` (bytes) makes a full-disk message say how much was needed; ``digest`` hashes
    the content on the way; ``before_replace(written)`` runs after the data is on disk and
    before the rename, so a record of the file (a manifest) never lags behind it.
    """
    path = Path(path)
    tmp: str | None = None
    sink: _CountingWriter | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            sink = _CountingWriter(handle, digest)
            yield sink
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(Written(sink.size, sink.sha256))
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = sink.error if sink is not None and sink.error is not None else err
        if isinstance(cause, OSError):
            written = sink.size if sink is not None else 0
            raise write_failure(path, cause, written, size_hint) from None
        raise


def write_failure(
    path: Path, err: OSError, written: int, size_hint: int | None
) -> WriteFailedError:
    """One line: which file, why, and for a full disk how much space it needed."""
    kept = "the previous version is intact" if path.exists() else "nothing was written"
    if err.errno in DISK_FULL:
        needed = max(size_hint or 0, written)
        amount = f"about {human_bytes(needed)}" if size_hint else f"more than {human_bytes(needed)}"
        return WriteFailedError(
            f"{path}: disk full while writing ({amount} needed, {human_bytes(free_bytes(path))} "
            f"free); {kept} — free some space and retry"
        )
    reason = err.strerror or type(err).__name__
    return WriteFailedError(f"{path}: cannot write ({reason}); {kept}")


def atomic_write_text(path: Path, text: str, **options: Any) -> Written:
    data = text.encode()
    return atomic_write_bytes(path, data, **options)


def atomic_write_bytes(path: Path, data: bytes, **options: Any) -> Written:
    return _atomic_write(path, len(data), lambda handle: handle.write(data), options)


def atomic_torch_save(obj: Any, path: Path, **options: Any) -> Written:
    return _atomic_write(path, tensor_bytes(obj), lambda sink: torch.save(obj, sink), options)


def _atomic_write(
    path: Path, size_hint: int, write: Callable[[Any], object], options: dict[str, Any]
) -> Written:
    """``write`` into ``atomic_open``; what was written, still passed to ``before_replace``."""
    written: list[Written] = []
    before = options.pop("before_replace", None)

    def record(info: Written) -> None:
        written.append(info)
        if before is not None:
            before(info)

    with atomic_open(path, size_hint=size_hint, before_replace=record, **options) as handle:
        write(handle)
    return written[0]


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested state dict: close to the size ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def new_file_mode() -> int:
    """The mode ``open(path, 'w')`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (threads are running)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def free_bytes(path: Path) -> int:
    """Free space on the filesystem holding ``path`` (0 when it cannot be told)."""
    for candidate in (path.parent, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
