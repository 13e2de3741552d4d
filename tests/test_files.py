"""`blockqnn.files`: the one output helper and the one check of a user's path (issue 24)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from blockqnn import files
from blockqnn.errors import BlockQNNError


def _full_disk(f: BinaryIO) -> None:
    f.write(b"half of it")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_mid_write_is_named_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.html"
    target.write_text("the old page")
    with pytest.raises(BlockQNNError, match=r"--out .*out\.html: cannot write: disk full"):
        files.write_with(target, _full_disk, "--out")
    assert target.read_text() == "the old page"  # nothing lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]


def test_a_full_disk_at_fsync_is_named_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(BlockQNNError, match="disk full"):
        files.write_atomic(tmp_path / "x.svg", "<svg/>", "--svg")
    assert list(tmp_path.iterdir()) == []


def test_permission_denied_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(BlockQNNError, match="cannot write: permission denied"):
        files.write_atomic(tmp_path / "x.svg", "<svg/>", "--svg")
    assert list(tmp_path.iterdir()) == []


def test_any_other_error_also_removes_the_temp_file(tmp_path: Path) -> None:
    def broken(f: BinaryIO) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_with(tmp_path / "x", broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "the name is empty"),
        ("a/" * 2100, "path of 4200 bytes"),
        ("x" * 256, "a path component of 256 bytes"),
        ("é" * 128, "a path component of 256 bytes"),  # bytes, not characters
    ],
)
def test_paths_the_file_system_cannot_hold_are_refused(path: str, message: str) -> None:
    with pytest.raises(BlockQNNError, match=message):
        files.check_path(path, "--out")


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(BlockQNNError, match="symlink loop"):
        files.check_path(tmp_path / "a", "--warm-start")


def test_existence_is_checked_only_where_required(tmp_path: Path) -> None:
    assert files.check_path(tmp_path / "new", "--out") == tmp_path / "new"
    with pytest.raises(BlockQNNError, match="no such file or directory"):
        files.check_path(tmp_path / "new", "--config", must_exist=True)
