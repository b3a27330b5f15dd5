"""The debug kernels' config on the real source (guest.debugkernel, race --sanitizer): Debian's
whole linux-source tree extracted into the test cache (pipeline.fetch.full_source, 1.6 GB,
seconds with xz -T0), then the fragments applied exactly as a build applies them
(x86_64_defconfig, kvm_guest.config, one merge_config.sh call, olddefconfig: seconds, no
compiling) and every option they ask for checked to hold: a silently dropped or unknown option
fails. And the refusals that need the archive: a 5.10 kernel (gcc-10) gets no KCSAN kernel.
The full build and race: bench/bench_sanitizer.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcpatch.guest import debugkernel
from smcpatch.kernels.kconfig import KernelConfig
from smcpatch.pipeline import fetch
from smcpatch.plumbing import hostpkg
from smcpatch.plumbing.cache import Cache

ROOT = Path(__file__).resolve().parents[2]


def configure(tree: Path, out: Path, checker: debugkernel.Sanitizer, series: str,
              cc: str = "gcc-12") -> Path:
    """The config steps of debugkernel._build, without the make of the kernel. Its tools first,
    as a build installs them (a fresh machine has no flex or bison for Kconfig)."""
    hostpkg.ensure(debugkernel.host_tools(cc), "debug kernel build tools")
    parts = debugkernel.fragments(checker, series)
    log = out / "config.log"
    out.mkdir(parents=True)
    base = ["make", "-C", str(tree), f"O={out}", f"CC={cc}"]
    debugkernel._run([*base, "x86_64_defconfig"], log, tree)
    debugkernel._run([*base, "kvm_guest.config"], log, tree)
    debugkernel._run([str(tree / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O", str(out),
                      str(out / ".config"), *map(str, parts)], log, tree)
    debugkernel._run([*base, "olddefconfig"], log, tree)
    return out / ".config"


@pytest.mark.parametrize("version", ["6.12.107", "6.1.176"])
def test_every_option_the_fragments_ask_for_holds(version: str, test_cache: Cache,
                                                  workspace_for: object, tmp_path: Path) -> None:
    ws = workspace_for(version)  # type: ignore[operator]
    tree, _key = fetch.full_source(test_cache, ws)
    assert (tree / "Makefile").is_file() and (tree / "net" / "smc" / "smc_clc.c").is_file()
    known = debugkernel.kconfig_symbols(tree)
    cc = KernelConfig.read(ws.kernel_config).compiler_command  # as race --sanitizer does
    for checker in debugkernel.SANITIZERS.values():
        parts = debugkernel.fragments(checker, ws.target.series)
        config = configure(tree, tmp_path / checker.name, checker, ws.target.series, cc)
        text = config.read_text()
        assert debugkernel.config_problems(text, debugkernel.wanted_options(parts), known) == []
        assert f'CONFIG_LOCALVERSION="-smcdbg-{checker.name}"' in text
        assert "CONFIG_SMC=m" in text and "CONFIG_PVH=y" in text
        assert f'CONFIG_CC_VERSION_TEXT="{cc} (Debian 12.' in text  # the kernel's own compiler


def test_a_dropped_option_is_caught_on_the_real_tree(test_cache: Cache, workspace_for: object,
                                                     tmp_path: Path) -> None:
    """6.1 still has AUTOFS4_FS, which selects AUTOFS_FS: without base-6.1.config's line the
    base fragment's request is silently dropped by Kconfig; the check says so."""
    ws = workspace_for("6.1.176")  # type: ignore[operator]
    tree, _key = fetch.full_source(test_cache, ws)
    kcsan = debugkernel.SANITIZERS["kcsan"]
    config = configure(tree, tmp_path / "no-6.1-fragment", kcsan, "6.12")  # the 6.12 set
    parts = debugkernel.fragments(kcsan, "6.12")
    problems = debugkernel.config_problems(config.read_text(), debugkernel.wanted_options(parts))
    assert problems == ["CONFIG_AUTOFS_FS: asked n, .config has y"]


def test_a_gcc_10_kernel_gets_no_kcsan_kernel(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200",
           "SMCPATCH_CACHE": str(Path.home() / ".cache" / "smcpatch-tests")}
    proc = subprocess.run([sys.executable, "-m", "smcpatch", "race", "--sanitizer", "kcsan",
                           "--kernel", "5.10.223"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "was built with gcc-10; KCSAN needs gcc >= 11" in lines[0], lines
