"""Can an output path be created and written? Asked before any work starts, answered in one line.

A run that trains for an hour and then cannot write its run dir (a file in the way, a read-only
mount, ``/proc``) wastes the hour; so ``fedlab run`` and ``fedlab compare`` check their output
directory first, and ``fedlab inertia report --png`` its figure path. The check creates nothing
at the target: it probes the nearest existing ancestor with a temporary entry it removes again.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from fedlab_cli.errors import FedlabError

PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Kernel interfaces, not storage: writing a run there fails or does something else entirely."""
MEMORY_FILESYSTEMS = (Path("/dev/shm"),)
"""Real (RAM-backed) storage under ``/dev``, allowed."""


def check_output_dir(path: Path, field: str) -> None:
    """Refuse, as ``field: problem (got path)``, a directory that cannot be created or written.

    An existing directory must be writable; a missing one must have a creatable, writable
    nearest existing ancestor that is a directory.
    """
    path = _checked_text(path, field)
    absolute = Path(os.path.abspath(path))
    _check_name_lengths(absolute, field, path)
    try:
        _check_dir(path, absolute, field)
    except OSError as err:  # a loop of symlinks, an unreadable ancestor, ...
        reason = err.strerror or type(err).__name__
        raise FedlabError(f"{field}: cannot be used ({reason}) (got {_q(path)})") from None


def _check_dir(path: Path, absolute: Path, field: str) -> None:
    try:
        resolved = absolute.resolve()
    except RuntimeError:  # Python 3.11 reports a symlink loop this way
        raise OSError(errno.ELOOP, "too many levels of symbolic links") from None
    for pseudo in PSEUDO_FILESYSTEMS:
        if _within(resolved, pseudo) and not any(_within(resolved, m) for m in MEMORY_FILESYSTEMS):
            raise FedlabError(
                f"{field}: {pseudo} is a kernel interface, not storage (got {_q(path)})"
            )
    if absolute.exists() and not absolute.is_dir():
        raise FedlabError(f"{field}: exists and is a file, not a directory (got {_q(path)})")
    ancestor = absolute
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FedlabError(f"{field}: {_q(ancestor)} is a file, not a directory (got {_q(path)})")
    _probe(ancestor, field, path)


def check_output_file(path: Path, field: str, suffixes: tuple[str, ...]) -> None:
    """Refuse a file target that is a directory, has an unsupported suffix, or cannot be
    written in its (existing) directory."""
    path = _checked_text(path, field)
    absolute = Path(os.path.abspath(path))
    _check_name_lengths(absolute, field, path)
    if path.is_dir():
        raise FedlabError(f"{field}: is a directory; give a file name (got {_q(path)})")
    if path.suffix.lower().lstrip(".") not in suffixes:
        known = ", ".join(f".{s}" for s in suffixes)
        raise FedlabError(f"{field}: unsupported file type; use one of {known} (got {_q(path)})")
    parent = absolute.parent
    if not parent.is_dir():
        raise FedlabError(f"{field}: no such directory {str(path.parent)!r}")
    _probe(parent, field, path)


def _checked_text(path: Path | str, field: str) -> Path:
    text = str(path)
    if not text.strip():
        raise FedlabError(f"{field}: empty path (got {text!r})")
    if "\x00" in text:
        raise FedlabError(f"{field}: path contains a NUL byte (got {text!r})")
    return Path(text)


NAME_MAX, PATH_MAX = 255, 4096
"""Linux's limits for one path component and a whole path, in bytes."""


def _check_name_lengths(absolute: Path, field: str, given: Path) -> None:
    if len(os.fsencode(str(absolute))) >= PATH_MAX:
        raise FedlabError(f"{field}: path longer than {PATH_MAX} bytes (got {_q(given)[:80]}...)")
    for part in absolute.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise FedlabError(
                f"{field}: a path component is longer than {NAME_MAX} bytes "
                f"(got {_q(given)[:80]}...)"
            )


def _probe(directory: Path, field: str, given: Path) -> None:
    """Create and remove a temporary entry: the only test that root, ACLs and read-only
    mounts all answer truthfully."""
    try:
        probe = tempfile.mkdtemp(dir=directory, prefix=".fedlab-probe-")
        os.rmdir(probe)
    except OSError as err:
        why = {
            errno.EROFS: "is on a read-only filesystem",
            errno.EACCES: "is not writable",
            errno.EPERM: "is not writable",
            errno.ENOSPC: "is on a full disk",
            errno.EDQUOT: "is over its disk quota",
        }.get(err.errno, f"cannot be written ({err.strerror or type(err).__name__})")
        where = "" if directory == Path(os.path.abspath(given)) else f"{_q(directory)} "
        raise FedlabError(f"{field}: {where}{why} (got {_q(given)})") from None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _q(path: Path | str) -> str:
    return repr(str(path))
