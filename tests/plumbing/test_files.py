"""plumbing.files: the one output writer and its checks, on real files, devices and links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.plumbing import files


def test_a_temp_name_fits_the_filesystem_whatever_the_name() -> None:
    for name in ("x", "é" * 120, "r" * 255):
        tmp = files.temp_name(name)
        assert len(os.fsencode(tmp)) <= 255 and tmp.startswith(files.TMP_PREFIX)
        assert files.temp_owner_alive(tmp) is True  # still recognisably ours


def test_kinds_of_output(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "fifo")
    assert files.output_kind(tmp_path / "f", "--json") == files.FILE
    assert files.output_kind(tmp_path / "new", "--json") == files.FILE
    assert files.output_kind(tmp_path / "fifo", "--json") == files.STREAM
    assert files.output_kind(Path("/dev/null"), "--json") == files.STREAM
    assert files.output_kind(Path("/dev/stderr"), "--json") == files.FD
    with pytest.raises(BadInput, match="symbolic link"):
        files.output_kind(tmp_path / "link", "--json")
    with pytest.raises(BadInput, match="no directory"):
        files.output_kind(tmp_path / "missing" / "x.json", "--json")
    with pytest.raises(BadInput, match="is a directory"):
        files.output_kind(tmp_path, "--json")
    assert not (tmp_path / "missing").exists()


def test_a_descriptor_is_written_at_its_own_offset(tmp_path: Path) -> None:
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"printed before\n")
        files.write_output(Path(f"/dev/fd/{fd}"), "the document\n")
    finally:
        os.close(fd)
    assert log.read_text() == "printed before\nthe document\n"  # not reopened and truncated


def test_distinct_outputs_by_path_and_by_inode(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    os.link(tmp_path / "a", tmp_path / "b")
    files.check_distinct([("--json", tmp_path / "a"), ("--junit", tmp_path / "c")])
    with pytest.raises(BadInput, match="--json .* and --junit .* are the same file"):
        files.check_distinct([("--json", tmp_path / "a"), ("--junit", tmp_path / "b")])
    with pytest.raises(BadInput, match="the same file"):
        files.check_distinct([("--json", tmp_path / "new"),
                              ("--vex", tmp_path / "." / "new")])


def test_user_paths() -> None:
    assert files.user_path("~root/x", "--json") == Path("/root/x")
    for value, words in (("", "empty"), ("~nosuchuser-smcpatch/x", "no such user"),
                         ("a\0b", "NUL")):
        with pytest.raises(BadInput, match=words):
            files.user_path(value, "--json")


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no space left on device"):
        files.write_output(Path("/dev/full"), "x" * 10, "--json")
    path = tmp_path / "r.json"
    path.write_text("old")
    path.chmod(0o600)
    files.write_output(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_withdraw_removes_only_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("stale")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    assert files.withdraw_output(tmp_path / "link") is False
    assert files.withdraw_output(Path("/dev/null")) is False and Path("/dev/null").exists()
    assert files.withdraw_output(tmp_path / "f") is True and not (tmp_path / "f").exists()
