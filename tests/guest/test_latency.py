"""Unit tests for the benchmark's statistics, gate, pyperf parsing and report (no VM)."""

from __future__ import annotations

import lzma
import random
import struct
from pathlib import Path

import pytest

from smcpatch.data import GUEST_DIR
from smcpatch.errors import BadInput, VmError
from smcpatch.guest import initramfs
from smcpatch.guest import kernel as gk
from smcpatch.guest import latency as b
from smcpatch.guest import machine as vm
from smcpatch.plumbing import hostpkg


def _runs(center: float, n_runs: int = 10, n_vals: int = 10, spread: float = 0.01,
          seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[center * (1 + rng.gauss(0, spread)) for _ in range(n_vals)] for _ in range(n_runs)]


def _result(stats: list[b.ModeStats]) -> b.BenchResult:
    return b.BenchResult(results_dir=Path("."), release="r", variants=["before", "after"],
                         modes=[s.mode for s in stats], values={}, stats=stats)


def _stat(mode: str, ratio: float, lo: float, hi: float) -> b.ModeStats:
    return b.ModeStats(mode=mode, variant="after", before_median_s=1.0, after_median_s=ratio,
                       ratio=ratio, ci_low=lo, ci_high=hi, n_before=10, n_after=10,
                       significant=lo > 1 or hi < 1)


def _write_bench(path: Path, name: str, runs: list[list[float]]) -> None:
    import pyperf

    pruns = [pyperf.Run(vals, warmups=[(30, vals[0])],
                        metadata={"name": name, "loops": 30, "unit": "second"},
                        collect_metadata=False) for vals in runs]
    pyperf.Benchmark(pruns).dump(str(path), replace=True)


def _fake_module(release: str, depends: str = "") -> bytes:
    return (b"\x7fELF" + b"\0" * 60 + b"\0license=GPL\0depends=" + depends.encode()
            + b"\0vermagic=" + release.encode() + b" SMP preempt mod_unload modversions \0")


def _guest_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("guest_bench", GUEST_DIR / "guest_bench.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _elf_with_note(name: bytes, ntype: int) -> bytes:
    """A minimal ELF64 with one PT_NOTE program header holding one note."""
    desc = b"\0" * 4
    note = struct.pack("<III", len(name) + 1, len(desc), ntype) + name + b"\0"
    note += b"\0" * (-len(note) % 4) + desc
    ehdr = bytearray(64)
    ehdr[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", ehdr, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", ehdr, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(ehdr) + phdr + note


def _bzimage(payload: bytes) -> bytes:
    setup_sects = 1
    img = bytearray(0x400)
    img[0x1F1] = setup_sects
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", img, 0x248, 0, len(payload))
    return bytes(img) + payload


def test_median() -> None:
    assert b.median([3.0, 1.0, 2.0]) == 2.0
    assert b.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    with pytest.raises(ValueError):
        b.median([])


def test_ratio_ci_contains_true_ratio_and_is_narrow() -> None:
    before, after = _runs(100e-6, seed=1), _runs(110e-6, seed=2)
    ratio, lo, hi = b.bootstrap_ratio_ci(before, after, iterations=1000)
    assert lo <= ratio <= hi
    assert lo < 1.10 < hi
    assert hi - lo < 0.03
    assert lo > 1.05  # a 10% slowdown with 1% noise is clearly beyond 5%


def test_ratio_ci_identical_distributions_straddles_one() -> None:
    before, after = _runs(100e-6, seed=3), _runs(100e-6, seed=4)
    ratio, lo, hi = b.bootstrap_ratio_ci(before, after, iterations=1000)
    assert lo < 1.0 < hi
    assert abs(ratio - 1) < 0.01


def test_ratio_ci_is_deterministic_for_a_seed() -> None:
    before, after = _runs(1.0, seed=5), _runs(1.02, seed=6)
    assert b.bootstrap_ratio_ci(before, after, seed=7) == b.bootstrap_ratio_ci(before, after,
                                                                               seed=7)


def test_run_level_noise_widens_the_interval() -> None:
    """Values inside one run are correlated: the CI must reflect run-to-run variation."""
    rng = random.Random(8)

    def shifted(center: float) -> list[list[float]]:
        out = []
        for _ in range(6):
            level = center * (1 + rng.gauss(0, 0.05))  # per module load
            out.append([level * (1 + rng.gauss(0, 0.001)) for _ in range(20)])
        return out

    _, lo, hi = b.bootstrap_ratio_ci(shifted(1.0), shifted(1.0), iterations=1000)
    assert hi - lo > 0.03


def test_bootstrap_needs_values() -> None:
    with pytest.raises(ValueError):
        b.bootstrap_ratio_ci([], [[1.0]])
    with pytest.raises(ValueError):
        b.bootstrap_ratio_ci([[1.0]], [[]])


def test_mode_stats_fields() -> None:
    s = b.mode_stats("clcv1", "canary", _runs(100e-6, seed=9), _runs(170e-6, seed=10),
                     iterations=500)
    assert s.mode == "clcv1" and s.variant == "canary"
    assert s.before_median_s == pytest.approx(100e-6, rel=0.01)
    assert s.after_median_s == pytest.approx(170e-6, rel=0.01)
    assert s.significant and s.ci_low > 1.6
    assert s.n_before == s.n_after == 100
    assert s.ci_width == pytest.approx(s.ci_high - s.ci_low)


@pytest.mark.parametrize(
    ("ratio", "lo", "hi", "passes"),
    [
        (1.00, 0.98, 1.02, True),    # no change
        (0.90, 0.88, 0.92, True),    # faster
        (1.04, 1.02, 1.06, True),    # slower but within the threshold
        (1.08, 0.97, 1.20, True),    # beyond the threshold but not significant
        (1.08, 1.04, 1.12, False),   # significantly slower beyond the threshold
        (1.72, 1.70, 1.75, False),   # the canary
    ],
)
def test_gate(ratio: float, lo: float, hi: float, passes: bool) -> None:
    ok, lines = b.gate(_result([_stat("tcp", 1.0, 0.99, 1.01), _stat("clcv1", ratio, lo, hi)]),
                       0.05)
    assert ok is passes
    assert len(lines) == 2
    assert ("REGRESSION" in lines[1]) is (not passes)
    assert lines[1].startswith("clcv1")


def test_gate_threshold_is_respected() -> None:
    res = _result([_stat("smcr", 1.08, 1.04, 1.12)])
    assert b.gate(res, 0.05)[0] is False
    assert b.gate(res, 0.10)[0] is True


def test_gate_canary_synthetic_end_to_end() -> None:
    """A 5% slowdown in clcv1 with the noise measured under QEMU icount (~1%) is detected."""
    before = _runs(156e-6, n_runs=20, spread=0.01, seed=11)
    after = _runs(156e-6 * 1.07, n_runs=20, spread=0.01, seed=12)
    s = b.mode_stats("clcv1", "after", before, after, iterations=1000)
    ok, _ = b.gate(_result([s]), 0.05)
    assert not ok


def test_config_check() -> None:
    b.BenchConfig().check()
    assert b.BenchConfig(connections_per_run=300, values_per_run=10).loops == 30
    assert b.BenchConfig(connections_per_run=5, values_per_run=10).loops == 1
    for bad in (b.BenchConfig(modes=("smcd",)), b.BenchConfig(modes=()), b.BenchConfig(runs=1),
                b.BenchConfig(threshold=5)):
        with pytest.raises(BadInput):
            bad.check()


def test_load_pyperf_runs_roundtrip(tmp_path: Path) -> None:
    runs = [[1e-4, 1.1e-4, 0.9e-4], [1.2e-4, 1.0e-4, 1.05e-4]]
    _write_bench(tmp_path / "clcv1-before.json", "clcv1", runs)
    assert b.load_pyperf_runs(tmp_path / "clcv1-before.json") == runs


def test_load_pyperf_runs_bad_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(VmError):
        b.load_pyperf_runs(p)
    with pytest.raises(VmError):
        b.load_pyperf_runs(tmp_path / "missing.json")


def test_compare_plot_and_summary(tmp_path: Path) -> None:
    import pyperf

    values: dict[str, dict[str, list[list[float]]]] = {}
    suites: dict[str, list[pyperf.Benchmark]] = {"before": [], "after": []}
    for i, mode in enumerate(b.MODES):
        values[mode] = {}
        for j, var in enumerate(("before", "after")):
            runs = _runs(100e-6 * (1 + 0.2 * j), n_runs=4, seed=10 * i + j)
            values[mode][var] = runs
            _write_bench(tmp_path / f"{mode}-{var}.json", mode, runs)
            suites[var].append(pyperf.Benchmark.load(str(tmp_path / f"{mode}-{var}.json")))
    for var, benches in suites.items():
        pyperf.BenchmarkSuite(benches).dump(str(tmp_path / f"{var}.json"))
    stats = [b.mode_stats(m, "after", values[m]["before"], values[m]["after"], iterations=200)
             for m in b.MODES]
    res = b.BenchResult(results_dir=tmp_path, release="6.12.107+deb12-amd64",
                        variants=["before", "after"], modes=list(b.MODES), values=values,
                        stats=stats, boot_s=7.5, wall_s=300.0,
                        validation={"before": {"clcv1": {"connections": 20, "calls": 20,
                                                         "durations_ns": [1500, 1600]}}})
    res.compare_text = b.pyperf_compare(tmp_path, "after")
    assert "clcv1" in res.compare_text and "slower" in res.compare_text
    png = b.plot(res, tmp_path / "latency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = b.summary_markdown(res, 0.05)
    assert "| clcv1 | after |" in md
    assert "**FAIL**" in md  # 20% slower everywhere
    assert "| before | clcv1 | 20 | 20 | 1550 |" in md


def test_modinfo_and_release(tmp_path: Path) -> None:
    ko = tmp_path / "smc.ko"
    ko.write_bytes(_fake_module("6.12.107+deb12-amd64", "ib_core"))
    assert gk.modinfo(ko.read_bytes(), "depends") == ["ib_core"]
    assert gk.module_release(ko) == "6.12.107+deb12-amd64"
    xz = tmp_path / "smc.ko.xz"
    xz.write_bytes(lzma.compress(_fake_module("6.1.0-40-amd64"), format=lzma.FORMAT_XZ))
    assert gk.module_release(xz) == "6.1.0-40-amd64"


def test_check_module_matches(tmp_path: Path) -> None:
    k = gk.GuestKernel(release="6.12.107+deb12-amd64", vmlinuz=tmp_path / "vmlinuz",
                       modules_root=tmp_path)
    good, bad, junk = tmp_path / "a.ko", tmp_path / "b.ko", tmp_path / "c.ko"
    good.write_bytes(_fake_module("6.12.107+deb12-amd64"))
    bad.write_bytes(_fake_module("6.1.0-40-amd64"))
    junk.write_bytes(b"hello")
    gk.check_module_matches(k, good)
    with pytest.raises(BadInput, match="built for kernel 6.1.0-40-amd64"):
        gk.check_module_matches(k, bad)
    with pytest.raises(BadInput, match="not a kernel module"):
        gk.check_module_matches(k, junk)
    with pytest.raises(BadInput, match="not found"):
        gk.check_module_matches(k, tmp_path / "missing.ko")


def test_cpio_newc_layout() -> None:
    data = initramfs.cpio_newc([("init", 0o100755, b"#!/bin/sh\n"), ("bin", 0o40755, b"")])
    assert data.startswith(b"070701")
    assert b"TRAILER!!!" in data
    assert len(data) % 4 == 0
    # first header: namesize field (13th) covers "init\0"
    fields = [int(data[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
    assert fields[1] == 0o100755 and fields[6] == len(b"#!/bin/sh\n") and fields[11] == 5


def test_ensure_host_tools_reports_the_apt_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from smcpatch.errors import ToolMissing

    monkeypatch.setattr(hostpkg, "which", lambda tool: None)
    monkeypatch.setattr(vm.os, "geteuid", lambda: 1000)
    with pytest.raises(ToolMissing, match="apt-get install -y --no-install-recommends "
                       "qemu-system-x86"):
        vm.ensure_host_tools(["qemu-system-x86_64"])


def test_qemu_command_shares_root_readonly(tmp_path: Path) -> None:
    k = gk.GuestKernel(release="r", vmlinuz=tmp_path / "vmlinuz", modules_root=tmp_path)
    cmd = vm.qemu_command("amd64", k, tmp_path / "i.cpio", smp=1, icount="shift=0,sleep=off",
                          shares=(vm.Share("hostroot", Path("/"), readonly=True),))
    joined = " ".join(cmd)
    assert "path=/,readonly=on" in joined
    assert "-no-reboot" in cmd and "panic=-1" in joined
    assert cmd[cmd.index("-icount") + 1] == "shift=0,sleep=off"


def test_guest_proofs() -> None:
    g = _guest_module()
    before = {"smcr_srv_v2_succ": 10, "smcr_clnt_v2_succ": 10, "srv_fback": 5, "clnt_fback": 0,
              "srv_rsn_03030000": 65535}
    # smcr: 30 real SMC-R connections
    after = {**before, "smcr_srv_v2_succ": 40, "smcr_clnt_v2_succ": 40}
    g.prove("smcr", 30, g.stats_delta(before, after))
    # clcv1: 30 server fallbacks with NOSMCDEV (the u16 reason counter wraps)
    after = {**before, "srv_fback": 35, "srv_rsn_03030000": 29}
    assert g.stats_delta(before, after)["srv_rsn_03030000"] == 30
    g.prove("clcv1", 30, g.stats_delta(before, after))
    # tcp: nothing moves
    g.prove("tcp", 30, g.stats_delta(before, dict(before)))


def test_guest_proofs_name_the_fallback_reason() -> None:
    g = _guest_module()
    before = {"srv_fback": 0, "clnt_fback": 0}
    after = {"srv_fback": 30, "clnt_fback": 30, "srv_rsn_03030008": 30, "clnt_rsn_03030008": 30}
    with pytest.raises(g.Fail, match=r"not SMC-R .*0x03030008 \(NOUEID\)"):
        g.prove("smcr", 30, g.stats_delta(before, after))
    after = {"srv_fback": 30, "clnt_fback": 0, "srv_rsn_03070000": 30}
    with pytest.raises(g.Fail, match="DIFFPREFIX"):
        g.prove("clcv1", 30, g.stats_delta(before, after))
    with pytest.raises(g.Fail, match="SMC counters moved"):
        g.prove("tcp", 30, g.stats_delta(before, {"smcr_srv_v2_succ": 1}))


def test_extract_pvh_vmlinux(tmp_path: Path) -> None:
    elf = _elf_with_note(b"Xen", gk.XEN_ELFNOTE_PHYS32_ENTRY)
    assert gk._has_pvh_entry(elf)
    assert not gk._has_pvh_entry(_elf_with_note(b"GNU", 3))
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ) + struct.pack("<I", len(elf))
    p = tmp_path / "vmlinuz"
    p.write_bytes(_bzimage(payload))
    assert gk.extract_pvh_vmlinux(p) == elf
    # no PVH note, wrong size, not a bzImage: boot the bzImage as is
    plain = _elf_with_note(b"GNU", 3)
    p.write_bytes(_bzimage(lzma.compress(plain, format=lzma.FORMAT_XZ)
                           + struct.pack("<I", len(plain))))
    assert gk.extract_pvh_vmlinux(p) is None
    p.write_bytes(_bzimage(lzma.compress(elf, format=lzma.FORMAT_XZ) + struct.pack("<I", 1)))
    assert gk.extract_pvh_vmlinux(p) is None
    p.write_bytes(b"MZ" + b"\0" * 0x300)
    assert gk.extract_pvh_vmlinux(p) is None
