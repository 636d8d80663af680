"""Fetching an official archive, and the one-line error when a dataset's files are missing."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedlab_cli.errors import DatasetUnavailableError


@dataclass(frozen=True)
class Archive:
    """An official release: where to get it, its md5, and the folder it extracts to."""

    dataset: str
    url: str
    md5: str
    folder: str


def fetch(archive: Archive, root: Path) -> str | None:
    """Download, verify (md5) and extract ``archive`` into ``root``; a failure as one line.

    A failed or interrupted download removes what it created (the data root if it was new,
    the partial archive, a half-extracted folder), so no empty or partial folder is left to
    look like a dataset.
    """
    from torchvision.datasets import utils as tv_utils

    created = [
        p for p in (root, root / archive.folder, root / archive_file(archive)) if not p.exists()
    ]
    try:
        tv_utils.download_and_extract_archive(archive.url, str(root), md5=archive.md5)
    except BaseException as exc:  # URLError, md5 mismatch, bad archive, Ctrl-C...
        remove_created(created)
        if not isinstance(exc, Exception):
            raise
        return one_line(exc)
    return None


def archive_file(archive: Archive) -> str:
    """The file name the archive is downloaded to under the root (torchvision's choice)."""
    return os.path.basename(archive.url)


def remove_created(paths: list[Path]) -> None:
    """Remove paths a failed download created (they did not exist before it started)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def ensure_files(archive: Archive, root: Path, download: bool, missing_in) -> Path:
    """The extracted folder under ``root``, downloaded first if allowed and needed.

    ``missing_in(folder)`` lists what the loader needs but cannot find there.
    """
    folder = root / archive.folder
    missing = missing_in(folder)
    failure = None
    if missing and download:
        failure = fetch(archive, root) or "the archive lacked them"
        missing = missing_in(folder)
    if missing:
        raise unavailable(archive, folder, missing, failure)
    return folder


def unavailable(
    archive: Archive, folder: Path, missing: list[str], download_failure: str | None
) -> DatasetUnavailableError:
    """One line: what is missing, where it goes, where to get it (and why the download failed)."""
    put = f"put the extracted '{archive.folder}' folder in {folder.parent}"
    if download_failure is None:
        how = f"{put} or set data.download: true"
    else:
        how = f"download failed ({download_failure}); {put}"
    return DatasetUnavailableError(
        f"data: {archive.dataset} files missing in {folder} ({', '.join(missing)}); {how} "
        f"(archive {archive.url}, md5 {archive.md5})"
    )


def one_line(exc: BaseException) -> str:
    """An exception as a single short line (urllib, tarfile, zipfile messages may span lines)."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
