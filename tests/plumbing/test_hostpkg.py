"""Host tools (smcpatch.plumbing.hostpkg): what counts as present, what the user is told, and
dpkg's lock seen as apt sees it. Installing for real is tests/integration/test_install.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from smcpatch.errors import ToolMissing
from smcpatch.plumbing import hostpkg


def test_a_tool_is_a_command_or_a_file(tmp_path: Path) -> None:
    assert hostpkg.Tool("sh", "dash").present()
    assert not hostpkg.Tool("no-such-command-here", "nothing").present()
    header = tmp_path / "inet.h"
    assert not hostpkg.Tool(str(header), "libc6-dev").present()
    header.write_text("")
    assert hostpkg.Tool(str(header), "libc6-dev").present()
    assert not hostpkg.Tool("sh", "dash", accept=lambda path: False).present()


def test_missing_lists_each_command_once() -> None:
    absent = hostpkg.Tool("no-such-command-here", "pkg-a")
    tools = [absent, hostpkg.Tool("sh", "dash"), absent]
    assert hostpkg.missing(tools) == [absent]


def test_not_root_is_told_the_exact_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostpkg.os, "geteuid", lambda: 1000)
    tools = [hostpkg.Tool("no-such-a", "pkg-b"), hostpkg.Tool("no-such-b", "pkg-a")]
    with pytest.raises(ToolMissing) as exc:
        hostpkg.ensure(tools, "build tools")
    assert exc.value.one_line() == ("missing build tools (no-such-a, no-such-b): run "
                                    "`apt-get install -y --no-install-recommends pkg-a pkg-b` "
                                    "as root")


def test_present_tools_need_no_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt(*args: object, **kwargs: object) -> tuple[bool, str]:
        raise AssertionError("apt-get must not run when every tool is there")

    monkeypatch.setattr(hostpkg, "apt_install", no_apt)
    hostpkg.ensure([hostpkg.Tool("sh", "dash")], "build tools")


def test_dpkg_lock_holder_sees_a_posix_lock(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """apt and dpkg lock with fcntl (POSIX) locks: another process holding one is seen."""
    lock = tmp_path / "lock-frontend"
    lock.write_text("")
    monkeypatch.setattr(hostpkg, "DPKG_FRONTEND_LOCK", str(lock))
    assert not hostpkg.dpkg_lock_holder()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'r+'); "
         "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert hostpkg.dpkg_lock_holder()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert not hostpkg.dpkg_lock_holder()
