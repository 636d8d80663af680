"""Verified downloads over file:// URLs: nothing lands unless the md5 matches."""

import hashlib
from pathlib import Path

import pytest

from fedlab_cli.data.verified_download import (
    ChecksumError,
    download_from_mirrors,
    download_verified,
    file_md5,
)


def _source(tmp_path: Path, content: bytes) -> tuple[str, str]:
    src = tmp_path / "mirror" / "file.bin"
    src.parent.mkdir()
    src.write_bytes(content)
    return src.as_uri(), hashlib.md5(content).hexdigest()


def test_download_lands_with_the_right_md5(tmp_path: Path) -> None:
    content = bytes(range(256)) * 5000  # spans several read chunks
    url, md5 = _source(tmp_path, content)
    dest = tmp_path / "out" / "file.bin"
    download_verified(url, dest, md5)
    assert dest.read_bytes() == content and file_md5(dest) == md5


def test_wrong_md5_leaves_no_file(tmp_path: Path) -> None:
    url, _ = _source(tmp_path, b"payload")
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(ChecksumError, match=r"expected 0{32}"):
        download_verified(url, dest, "0" * 32)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_mirrors_are_tried_in_order_and_failures_are_one_line(tmp_path: Path) -> None:
    url, md5 = _source(tmp_path, b"payload")
    dead = (tmp_path / "nowhere" / "file.bin").as_uri()
    dest = tmp_path / "out.bin"
    assert download_from_mirrors([dead, url], dest, md5) is None
    assert dest.read_bytes() == b"payload"
    failure = download_from_mirrors([url, dead], tmp_path / "other.bin", "f" * 32)
    assert failure is not None and failure.startswith("URLError") and "\n" not in failure
    assert not (tmp_path / "other.bin").exists()
