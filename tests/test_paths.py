"""Output paths are checked before any work: one line naming the flag or field."""

import errno
import os

import pytest

from fedlab_cli import paths
from fedlab_cli.errors import FedlabError
from fedlab_cli.paths import check_output_dir, check_output_file


def error(path, field="output.dir") -> str:
    with pytest.raises(FedlabError) as err:
        check_output_dir(path, field)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{field}: ")
    return message


def test_new_and_existing_writable_dirs_pass_and_nothing_is_created(tmp_path):
    check_output_dir(tmp_path / "a" / "b", "output.dir")
    check_output_dir(tmp_path, "output.dir")
    assert list(tmp_path.iterdir()) == []


def test_under_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    file, run = tmp_path / "f", tmp_path / "f" / "run"
    assert error(run) == f"output.dir: '{file}' is a file, not a directory (got '{run}')"
    assert error(tmp_path / "f", "--out") == (
        f"--out: exists and is a file, not a directory (got '{tmp_path / 'f'}')"
    )


@pytest.mark.parametrize("where", ["/proc/fedlab-run", "/sys/kernel/x", "/dev/fedlab"])
def test_kernel_interfaces_are_not_storage(where):
    root = where.split("/")[1]
    assert error(where) == f"output.dir: /{root} is a kernel interface, not storage (got '{where}')"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert error(ro / "run") == f"output.dir: '{ro}' is not writable (got '{ro / 'run'}')"


@pytest.mark.parametrize(
    "code, words",
    [(errno.EROFS, "is on a read-only filesystem"), (errno.EACCES, "is not writable"),
     (errno.ENOSPC, "is on a full disk")],
)  # fmt: skip
def test_probe_failures_are_named(tmp_path, monkeypatch, code, words):
    """What the kernel says when the probe fails (root bypasses permissions, so simulated)."""

    def refuse(**_):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(paths.tempfile, "mkdtemp", refuse)
    assert error(tmp_path / "run") == f"output.dir: '{tmp_path}' {words} (got '{tmp_path / 'run'}')"
    assert error(tmp_path) == f"output.dir: {words} (got '{tmp_path}')"


@pytest.mark.parametrize(
    "path, words",
    [("", "empty path"), ("a\0b", "path contains a NUL byte"),
     ("x" * 300, "a path component is longer than 255 bytes"),
     ("/".join(["y" * 200] * 30), "path longer than 4096 bytes")],
)  # fmt: skip
def test_unusable_names(path, words):
    assert words in error(path)


def test_symlink_loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert "cannot be used" in error(tmp_path / "loop" / "run")


def test_output_file_checks(tmp_path):
    suffixes = ("png", "pdf")
    check_output_file(tmp_path / "fig.PNG", "--png", suffixes)
    for target, words in [
        (tmp_path, "is a directory; give a file name"),
        (tmp_path / "fig.gif", "unsupported file type; use one of .png, .pdf"),
        (tmp_path / "fig", "unsupported file type"),
        (tmp_path / "nope" / "fig.png", "no such directory"),
    ]:
        with pytest.raises(FedlabError) as err:
            check_output_file(target, "--png", suffixes)
        assert str(err.value).startswith("--png: ") and words in str(err.value)
