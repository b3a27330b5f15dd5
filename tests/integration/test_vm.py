"""Integration smoke of the VM benchmark: boot the real kernel, load the after module, ~20
connections per mode, every proof must hold. Also the fault paths that need a real guest.

Inputs: by default the real pipeline's, for 6.12.107 (Debian's image, our verified after-module,
the canary build), from the test cache. Each can be overridden:
  SMCPATCH_TEST_IMAGE_DEB   the linux-image-<release>[-unsigned] .deb of the kernel to boot
  SMCPATCH_TEST_AFTER_KO    our fixed smc.ko for that release
  SMCPATCH_TEST_BEFORE_KO   optional; default: the smc.ko.xz shipped in the image
  SMCPATCH_TEST_CANARY_KO   the fixed module with the canary patch (smcpatch/data) (gate test)
  SMCPATCH_TEST_CACHE       optional cache directory (default: a pytest temp dir per session)
"""

from __future__ import annotations

import functools
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from smcpatch.errors import BadInput, VmError
from smcpatch.guest import initramfs
from smcpatch.guest import kernel as gk
from smcpatch.guest import latency as b
from smcpatch.guest import machine as vm
from tests.elfobjs import require_tool

pytestmark = pytest.mark.vm


VM_KERNEL = "6.12.107"


@functools.cache
def _pipeline_input(name: str) -> Path:
    """The input the VM tests need, made by the real pipeline in the test cache."""
    from smcpatch.commands.bench import build_canary
    from smcpatch.kernels.request import KernelRequest
    from smcpatch.pipeline.fetch import image_deb
    from smcpatch.pipeline.prepare import prepare_one
    from smcpatch.plumbing.cache import Cache
    from tests.conftest import cache_root_for_tests

    cache = Cache.open(cache_root_for_tests())  # the matrix kernel, in the test cache
    prepared = prepare_one(cache, KernelRequest((VM_KERNEL,), ("amd64",)), "VM test",
                           tools=vm.host_tools())
    assert prepared.workspace is not None and prepared.report.after is not None
    if name == "SMCPATCH_TEST_IMAGE_DEB":
        return image_deb(cache, prepared.workspace)
    if name == "SMCPATCH_TEST_CANARY_KO":
        return build_canary(cache, prepared)
    return Path(prepared.report.after.path)


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        return _pipeline_input(name)
    p = Path(value)
    if not p.is_file():
        pytest.skip(f"{name}={value} does not exist")
    return p


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("SMCPATCH_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("vm-cache")


@pytest.fixture(scope="session")
def kernel(cache_dir: Path) -> gk.GuestKernel:
    deb = _env_path("SMCPATCH_TEST_IMAGE_DEB")
    missing = vm.missing_host_tools()
    if missing and os.geteuid() != 0:
        pytest.skip(f"host tools missing: {sorted(missing)}")
    vm.ensure_host_tools()
    return gk.prepare_guest_kernel(deb, cache_dir)


@pytest.fixture(scope="session")
def modules(kernel: gk.GuestKernel) -> dict[str, Path]:
    after = _env_path("SMCPATCH_TEST_AFTER_KO")
    before_env = os.environ.get("SMCPATCH_TEST_BEFORE_KO")
    before = Path(before_env) if before_env else kernel.modules_dir / "kernel/net/smc/smc.ko.xz"
    return {"before": before, "after": after}


SMOKE = b.BenchConfig(connections_per_run=20, values_per_run=2, runs=2, warmups=1,
                      validate=True, validate_connections=20, timeout_s=420, bootstrap=200)


def _no_qemu_left(results_dir: Path) -> None:
    pgrep = require_tool("pgrep", "procps")
    out = subprocess.run([pgrep, "-af", "qemu-system-x86_64"], capture_output=True, text=True)
    assert str(results_dir) not in out.stdout, f"QEMU left behind: {out.stdout}"


def test_smoke_all_proofs_hold(kernel: gk.GuestKernel, modules: dict[str, Path], tmp_path: Path,
                               cache_dir: Path) -> None:
    t0 = time.monotonic()
    res = b.run_bench(kernel, modules, SMOKE, tmp_path / "results", cache_dir=cache_dir)
    assert res.release == kernel.release
    assert res.boot_s is not None and res.boot_s < 30
    for mode in b.MODES:
        for var in ("before", "after"):
            runs = res.values[mode][var]
            assert len(runs) == SMOKE.runs and all(len(r) == SMOKE.values_per_run for r in runs)
        s = res.stat(mode, "after")
        assert s.ci_low <= s.ratio <= s.ci_high
    # the validation pass: exactly one smc_clc_prfx_match per clcv1 connection, none otherwise
    for var in ("before", "after"):
        v = res.validation[var]
        assert v["clcv1"]["calls"] == SMOKE.validate_connections  # type: ignore[index]
        assert len(v["clcv1"]["durations_ns"]) == SMOKE.validate_connections  # type: ignore[index]
        assert v["smcr"]["calls"] == 0 and v["tcp"]["calls"] == 0  # type: ignore[index]
    for name in ("summary.md", "latency.png", "compare_to.txt", "before.json", "after.json",
                 "clcv1-after.json", "guest-result.json"):
        assert (res.results_dir / name).is_file(), name
    _no_qemu_left(res.results_dir)
    print(f"smoke: boot {res.boot_s:.1f} s, total {time.monotonic() - t0:.0f} s")


def test_module_for_another_release_is_refused(kernel: gk.GuestKernel, tmp_path: Path) -> None:
    other = tmp_path / "smc.ko"
    other.write_bytes(b"\x7fELF" + b"\0" * 60 + b"\0vermagic=6.1.0-99-amd64 SMP mod_unload \0")
    with pytest.raises(BadInput, match="built for kernel 6.1.0-99-amd64"):
        b.run_bench(kernel, {"before": other, "after": other}, SMOKE, tmp_path / "r")


def test_module_load_failure_shows_dmesg(kernel: gk.GuestKernel, modules: dict[str, Path],
                                         tmp_path: Path, cache_dir: Path) -> None:
    # right vermagic, broken module: insmod fails inside the guest
    data = gk.read_module_bytes(modules["after"])
    broken = tmp_path / "smc.ko"
    # e_shoff beyond the end of the file: the kernel rejects the ELF (ENOEXEC)
    broken.write_bytes(data[:0x28] + struct.pack("<Q", len(data) + 4096) + data[0x30:])
    cfg = b.BenchConfig(connections_per_run=2, values_per_run=1, runs=2, validate=False,
                        timeout_s=300)
    with pytest.raises(VmError, match=r"insmod .*failed(.|\n)*dmesg"):
        b.run_bench(kernel, {"before": modules["before"], "after": broken}, cfg,
                    tmp_path / "r", cache_dir=cache_dir)
    _no_qemu_left(tmp_path / "r")


def test_guest_hang_times_out_and_kills_qemu(kernel: gk.GuestKernel, tmp_path: Path,
                                              cache_dir: Path) -> None:
    image = initramfs.share_initramfs(kernel, cache_dir)
    t0 = time.monotonic()
    with pytest.raises(VmError, match="timed out(.|\n)*SMCB-INIT-DONE"):
        vm.run_script(kernel, image, tmp_path / "share", "sleep 1000\n", timeout_s=40, smp=1)
    assert time.monotonic() - t0 < 60
    _no_qemu_left(tmp_path / "share")


def test_guest_panic_is_reported(kernel: gk.GuestKernel, tmp_path: Path, cache_dir: Path) -> None:
    image = initramfs.share_initramfs(kernel, cache_dir)
    with pytest.raises(VmError, match="(?i)kernel panic"):
        vm.run_script(kernel, image, tmp_path / "share", "echo c > /proc/sysrq-trigger\n",
                     timeout_s=120, smp=1)
    _no_qemu_left(tmp_path / "share")


def test_gate_catches_the_canary(kernel: gk.GuestKernel, modules: dict[str, Path],
                                 tmp_path: Path, cache_dir: Path) -> None:
    """before, after (the fix) and canary (fix + udelay(100) in smc_clc_prfx_match) in one boot:
    the gate must flag the canary in clcv1 and pass the fix. Small enough for CI (~1-2 min)."""
    canary = _env_path("SMCPATCH_TEST_CANARY_KO")
    cfg = b.BenchConfig(modes=("clcv1", "tcp"), connections_per_run=60, values_per_run=6,
                        runs=4, validate=False, timeout_s=420, bootstrap=500)
    res = b.run_bench(kernel, {**modules, "canary": canary}, cfg, tmp_path / "results",
                      cache_dir=cache_dir)
    s_canary, s_after = res.stat("clcv1", "canary"), res.stat("clcv1", "after")
    assert s_canary.ci_low > 1 + cfg.threshold, s_canary
    assert not (s_after.ratio > 1 + cfg.threshold and s_after.ci_low > 1), s_after
    fix_only = b.BenchResult(results_dir=res.results_dir, release=res.release,
                             variants=["before", "after"], modes=res.modes, values=res.values,
                             stats=[s for s in res.stats if s.variant == "after"])
    assert b.gate(fix_only, cfg.threshold)[0] is True
    passed, lines = b.gate(res, cfg.threshold)
    assert passed is False
    assert any(line.startswith("clcv1") and "canary" in line and "REGRESSION" in line
               for line in lines)
    # `inv bench --junit`: the same rule, one test case per mode and candidate
    from junitparser import JUnitXml

    from smcpatch.outputs import junit

    junit.write(tmp_path / "bench.xml", junit.bench_suite(res, cfg.threshold))
    [suite] = list(JUnitXml.fromfile(str(tmp_path / "bench.xml")))
    failed = sorted(case.name for case in suite if case.result)
    assert "clcv1 canary/before" in failed and "clcv1 after/before" not in failed
    assert suite.tests == len(res.stats)
