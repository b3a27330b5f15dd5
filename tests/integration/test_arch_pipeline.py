"""arm64 and s390x end to end: Debian's foreign-arch headers beside the host's kbuild, a cross
build with Debian's cross gcc-12, the inspection by each machine's relocations and DWARF, and the
after-module loaded into Debian's own arm64 / s390x kernel in a QEMU (TCG) guest.

One vulnerable kernel of each arch (6.1.176) and the fixed arm64 one (6.1.192; bookworm-security
serves no s390x), through the command a user types.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from smcpatch.guest.loadcheck import load_check
from smcpatch.inspection.elf import open_elf
from smcpatch.plumbing.cache import Cache
from tests.faults import inv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cross_report(test_cache: Cache, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Any, dict[str, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("arch") / "report.json"
    proc = inv("verify", "--kernel", "6.1.176", "--arch", "arm64", "--arch", "s390x", "--load",
               "--cache", str(test_cache.root), "--json", str(out), timeout=1800)
    targets = json.loads(out.read_text())["targets"] if out.is_file() else []
    return proc, {t["arch"]: t for t in targets}


def test_vulnerable_to_fixed_on_arm64_and_s390x(
        cross_report: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    proc, by_arch = cross_report
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    assert set(by_arch) == {"arm64", "s390x"}
    for arch, r in by_arch.items():
        assert r["ok"], (arch, r["problems"])
        assert r["release"] == f"6.1.0-50-{arch}"
        assert (r["source_state"], r["patch"]) == ("vulnerable", "applied")
        assert r["before"]["verdict"] == "vulnerable"
        assert r["after"]["verdict"] == "fixed"
        assert r["shipped"]["verdict"] == "vulnerable"
        # the kernel's own compiler, cross: vermagic of that arch, every CRC of its symvers
        assert r["vermagic_ok"] and r["after"]["vermagic"].startswith(f"6.1.0-50-{arch} SMP ")
        assert r["modversions_ok"] and not r["modversions_mismatches"]
        assert r["changed_functions"] == ["smc_clc_prfx_match"]
        # our before-build's function is Debian's, byte for byte (normalized)
        assert r["shipped_same_as_before"] is True
        assert any(n.startswith(f"cross-built for {arch} with ") for n in r["notes"]), r["notes"]
        # no lock call on these non-preemptible kernels: the DWARF decided, and says so
        assert not r["after"]["evidence"]["rcu_read_lock_sites"]
        assert "decided by the DWARF evidence" in r["after"]["reasons"][-1]
        load = r["load"]
        assert load["loaded"] is True, load
        assert load["insmod"]["smc.ko"] == 0 and not load["complaints"]
        assert load["proc_modules"][0].startswith("smc ")
        assert "NET: Registered PF_SMC protocol family" in load["kernel_lines"]
    assert "vermagic" in proc.stdout and "loads" in proc.stdout  # the table a person reads


def test_the_guest_refuses_a_module_whose_crc_is_wrong(
        cross_report: tuple[Any, dict[str, dict[str, Any]]], test_cache: Cache,
        tmp_path: Path) -> None:
    """The load check can fail: the same s390x module with one __versions CRC altered is
    refused by the kernel (disagrees about version), and the check says so."""
    _, by_arch = cross_report
    r = by_arch["s390x"]
    good = Path(r["after"]["path"])
    bad = tmp_path / "smc.ko"
    shutil.copy(good, bad)
    elf = open_elf(good)
    versions = elf.by_name["__versions"]
    crc_at = versions.offset  # the first entry: {u64 crc (big-endian here), char name[56]}
    data = bytearray(bad.read_bytes())
    (crc,) = struct.unpack_from(">Q", data, crc_at)
    struct.pack_into(">Q", data, crc_at, crc ^ 0x5A5A5A5A)
    bad.write_bytes(bytes(data))
    image = next((test_cache.root / "debs").glob("linux-image-6.1.0-50-s390x_6.1.176-1_*.deb"))
    result = load_check(test_cache, "s390x", image, bad)
    assert result.loaded is False
    assert result.insmod["smc.ko"] != 0
    assert any("disagrees about version" in line for line in result.complaints), result
    assert "did not load" in result.detail


def test_fixed_arm64_kernel(test_cache: Cache, tmp_path: Path) -> None:
    """6.1.192 arm64: the source is fixed already, Debian's shipped module is judged fixed on
    its own (no preemption: the absent dst reference decides) and equals our after-build."""
    out = tmp_path / "r.json"
    proc = inv("verify", "--kernel", "6.1.192", "--arch", "arm64", "--cache",
               str(test_cache.root), "--json", str(out), timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    [r] = json.loads(out.read_text())["targets"]
    assert (r["arch"], r["source_state"], r["patch"]) == ("arm64", "fixed", "already-present")
    assert r["shipped"]["verdict"] == "fixed"
    assert "non-preemptible" in r["shipped"]["reasons"][-1]
    assert r["shipped_same_as_after"] is True
    assert r["vermagic_ok"] and r["modversions_ok"]


def test_a_suite_without_the_arch_is_said_plainly(test_cache: Cache) -> None:
    proc = inv("verify", "--kernel", "6.1.192", "--arch", "s390x", "--cache",
               str(test_cache.root))
    assert proc.returncode == 1
    assert "bookworm-security serves no s390x packages" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_users_arm64_tree_is_cross_built(
        cross_report: tuple[Any, dict[str, dict[str, Any]]], test_cache: Cache,
        tmp_path: Path) -> None:
    """--source/--kdir with an arm64 headers tree: the arch comes from the tree's .config."""
    kdir = (test_cache.root / "kdir" / "6.1.176-1_arm64" / "root" / "usr" / "src"
            / "linux-headers-6.1.0-50-arm64")
    source = test_cache.root / "sources" / "linux-source-6.1_6.1.176-1" / "tree"
    assert kdir.is_dir() and source.is_dir()  # left by the cross verify above
    out = tmp_path / "r.json"
    proc = inv("verify", "--source", str(source), "--kdir", str(kdir), "--cache",
               str(tmp_path / "cache"), "--json", str(out), timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    [r] = json.loads(out.read_text())["targets"]
    assert (r["arch"], r["release"]) == ("arm64", "6.1.0-50-arm64")
    assert r["after"]["verdict"] == "fixed" and r["vermagic_ok"] and r["modversions_ok"]
