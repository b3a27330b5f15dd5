"""What the running kernel says, read from a /proc and /sys given to it."""

from __future__ import annotations

from pathlib import Path

from smcpatch.installed.runtime import Runtime


def test_of_host_reads_modules_cmdline_and_modules_disabled(tmp_path: Path) -> None:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "sys/kernel").mkdir(parents=True)
    (sys / "module/smc").mkdir(parents=True)
    (proc / "modules").write_text("smc 245760 0 - Live 0x0000000000000000\n"
                                  "ib_core 450560 1 smc, Live 0x0000000000000000\n")
    (proc / "cmdline").write_text("BOOT_IMAGE=/vmlinuz ro module-blacklist=a,smc "
                                  "modprobe.blacklist=b -- module_blacklist=x\n")
    (proc / "sys/kernel/modules_disabled").write_text("1\n")
    (sys / "module/smc/srcversion").write_text("ABCDEF\n")
    runtime = Runtime.of_host(proc, sys)
    assert runtime.loaded == frozenset({"smc", "ib_core"})
    assert runtime.modules_disabled is True and runtime.smc_srcversion == "ABCDEF"
    assert runtime.kernel_params("module_blacklist") == ["a", "smc"]  # `--` ends the kernel's
    assert runtime.kernel_params("modprobe.blacklist") == ["b"]


def test_an_unreadable_proc_is_unknown_not_empty(tmp_path: Path) -> None:
    runtime = Runtime.of_host(tmp_path / "none", tmp_path / "none")
    assert runtime.loaded is None and runtime.cmdline is None
    assert runtime.modules_disabled is None and runtime.kernel_params("x") == []
    assert Runtime.absent().release is None
