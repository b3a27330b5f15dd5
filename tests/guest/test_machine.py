"""The QEMU guest's host side (smcpatch.guest.machine) without booting: missing tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.errors import ToolMissing
from smcpatch.guest import machine as vm
from tests.faults import fake_path


def test_missing_qemu_names_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", fake_path(tmp_path, lambda n: n.startswith(("qemu", "apt-"))))
    with pytest.raises(ToolMissing, match="apt-get install -y --no-install-recommends "
                                          "qemu-system-x86"):
        vm.ensure_host_tools(["qemu-system-x86_64"])


def _fake_qemu(tmp_path: Path, script: str) -> list[str]:
    """A stand-in for QEMU: writes a console as a guest would, then does what `script` says."""
    fake = tmp_path / "fake-qemu"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    return [str(fake)]


def test_a_guest_that_stops_talking_is_stopped_as_stalled(tmp_path: Path) -> None:
    """No console output for stall_s: QEMU is killed within seconds, the diagnosis says the
    guest's clock ran ahead of the host's (what -icount sleep=off does while the guest waits on
    a busy host) and quotes the guest's last words; never a silent wait for the timeout."""
    import time

    from smcpatch.errors import VmError

    command = _fake_qemu(tmp_path, 'echo "[guest  512.00s] rxe0 on lo"; echo "[  900.1] x"; '
                                   "exec sleep 300")
    started = time.monotonic()
    with pytest.raises(VmError, match="stalled") as exc:
        vm.boot(command, tmp_path / "console.log", done="SMCB-EXIT", timeout_s=120, stall_s=2)
    assert time.monotonic() - started < 15
    message = str(exc.value)
    assert "clock read 900 s" in message and "rxe0 on lo" in message


def test_a_guest_that_finishes_is_read_whole(tmp_path: Path) -> None:
    command = _fake_qemu(tmp_path, 'echo SMCB-INIT-DONE; echo "SMCB-EXIT 0"; exec sleep 300')
    run = vm.boot(command, tmp_path / "console.log", done="SMCB-EXIT ", ready="SMCB-INIT-DONE",
                  timeout_s=60, stall_s=30)
    assert "SMCB-EXIT 0" in run.text and run.marker_s is not None and run.wall_s < 15
