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
