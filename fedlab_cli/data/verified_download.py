"""Download one file, checked against its md5, so that a partial or wrong file never lands.

The bytes stream into a temp file next to the destination while their md5 is computed; only a
complete download with the expected checksum is renamed into place. Any ``urllib`` scheme works
(``https://``, ``http://``, ``file://``), so a local mirror is as good as the official one.
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from fedlab_cli.atomic import atomic_open
from fedlab_cli.data.download import one_line

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_USER_AGENT = "fedlab"


class ChecksumError(Exception):
    """A download finished but its md5 is not the expected one."""


def download_verified(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` into ``dest``; raise (leaving ``dest`` untouched) on any failure."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, atomic_open(dest) as out:
        digest = hashlib.md5(usedforsecurity=False)
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"md5 {digest.hexdigest()} of {url}, expected {md5}")


def download_from_mirrors(urls: Sequence[str], dest: Path, md5: str) -> str | None:
    """Try each mirror in order; None once one succeeds, else the last failure as one line."""
    failure = "no mirror given"
    for url in urls:
        try:
            download_verified(url, dest, md5)
        except Exception as exc:  # URLError, timeout, checksum...: try the next mirror
            failure = one_line(exc)
            continue
        return None
    return failure


def file_md5(path: Path) -> str:
    """The md5 of a file on disk, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
