"""features.loadcheck: the guest's words read into a verdict, and the QEMU command per arch.

The real guests (arm64, s390x, and a refused module) run in tests/integration/test_arch_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.guest import kernel as gk
from smcpatch.guest import loadcheck
from smcpatch.guest import machine as vm

LOADED = """\
[    2.1] Run /init as init process
SMCLOAD-BOOTED 6.1.0-50-s390x s390x
SMCLOAD-INSMOD ib_core.ko 0
SMCLOAD-INSMOD smc.ko 0
SMCLOAD-PROC-MODULES
smc 204800 0 - Live 0x000003ff7fd86000 (OE)
ib_core 397312 1 smc, Live 0x000003ff7fe2a000
SMCLOAD-TAINTED 12288
SMCLOAD-DMESG
[    3.0] smc: loading out-of-tree module taints kernel.
[    3.1] NET: Registered PF_SMC protocol family
SMCLOAD-DONE
"""

REFUSED = """\
SMCLOAD-INSMOD ib_core.ko 0
insmod: can't insert '/modules/smc.ko': invalid module format
SMCLOAD-INSMOD smc.ko 1
SMCLOAD-PROC-MODULES
ib_core 397312 0 - Live 0x000003ff7fe2a000
SMCLOAD-TAINTED 0
SMCLOAD-DMESG
[    3.0] smc: disagrees about version of symbol module_layout
SMCLOAD-DONE
"""


def _read(text: str) -> loadcheck.LoadResult:
    result = loadcheck.LoadResult(arch="s390x", release="6.1.0-50-s390x", module="smc.ko")
    loadcheck._read_console(text, result)
    return result


def test_a_loaded_module() -> None:
    result = _read(LOADED)
    assert result.loaded
    assert result.insmod == {"ib_core.ko": 0, "smc.ko": 0}
    assert result.proc_modules == ["smc 204800 0 - Live 0x000003ff7fd86000 (OE)"]
    assert result.tainted == 12288 and not result.complaints
    assert "NET: Registered PF_SMC protocol family" in result.kernel_lines
    assert result.detail.startswith("smc.ko loaded into 6.1.0-50-s390x (s390x")


def test_a_refused_module_says_why() -> None:
    result = _read(REFUSED)
    assert not result.loaded and not result.proc_modules
    assert result.complaints == ["smc: disagrees about version of symbol module_layout"]
    assert "insmod smc.ko (exit 1)" in result.detail and "disagrees" in result.detail


def test_insmod_success_without_proc_modules_is_not_loaded() -> None:
    text = LOADED.replace("smc 204800 0 - Live 0x000003ff7fd86000 (OE)\n", "")
    result = _read(text)
    assert not result.loaded and "not in /proc/modules" in result.detail


@pytest.mark.parametrize(("arch", "qemu", "console"), [
    ("amd64", "qemu-system-x86_64", "console=ttyS0"),
    ("arm64", "qemu-system-aarch64", "console=ttyAMA0"),
    ("s390x", "qemu-system-s390x", "console=ttysclp0"),
])
def test_qemu_command_per_arch(arch: str, qemu: str, console: str, tmp_path: Path) -> None:
    kernel = gk.GuestKernel(release="r", vmlinuz=tmp_path / "vmlinuz", modules_root=tmp_path)
    cmd = vm.qemu_command(arch, kernel, tmp_path / "i.cpio")
    assert cmd[0] == qemu
    assert console in cmd[cmd.index("-append") + 1]
    assert "-no-reboot" in cmd and cmd[cmd.index("-nic") + 1] == "none"  # no network
    assert {t.package for t in loadcheck.host_tools(arch)} >= {vm.MACHINES[arch].package}


def test_unknown_arch_is_bad_input() -> None:
    with pytest.raises(BadInput, match="no QEMU guest for architecture 'mips'"):
        loadcheck.host_tools("mips")
