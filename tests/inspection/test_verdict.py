"""inspection.verdict: the verdicts on gcc-built objects of both shapes, and the rules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from smcpatch import inspection
from smcpatch.inspection import CallSite, InspectError, inspect_module
from smcpatch.inspection.verdict import Sites, decide

FN = "smc_clc_prfx_match"


def _targets(sites: list[CallSite]) -> set[str]:
    return {s.target for s in sites}


@pytest.mark.parametrize("key", ["vuln_g", "vuln_nog", "vuln_stripped", "vuln_pie"])
def test_vulnerable_shape(objs: dict[str, Path], key: str) -> None:
    ev = inspect_module(objs[key]).evidence
    assert ev.verdict == "vulnerable", ev.reasons
    assert "dst_release" in _targets(ev.dst_ref_sites)
    assert ev.rcu_lock_sites and ev.rcu_unlock_sites
    assert any("dst_release" in r for r in ev.reasons)
    for site in ev.dst_ref_sites + ev.rcu_lock_sites + ev.rcu_unlock_sites + ev.calls:
        assert 0 <= site.offset < ev.fragments[site.fragment]
    assert set(ev.dst_ref_sites) <= set(ev.calls)


@pytest.mark.parametrize("key", ["fixed_g", "fixed_nog", "fixed_stripped"])
def test_fixed_shape(objs: dict[str, Path], key: str) -> None:
    ev = inspect_module(objs[key]).evidence
    assert ev.verdict == "fixed", ev.reasons
    assert ev.dst_ref_sites == []
    assert _targets(ev.rcu_lock_sites) == {"__rcu_read_lock"}
    assert _targets(ev.rcu_unlock_sites) == {"__rcu_read_unlock"}
    for site in ev.rcu_lock_sites + ev.rcu_unlock_sites:
        assert 0 <= site.offset < ev.fragments[site.fragment]
    assert "dst_release" not in _targets(ev.calls)


def test_no_rcu_lock_is_unknown(objs: dict[str, Path]) -> None:
    ev = inspect_module(objs["nolock"]).evidence
    assert ev.verdict == "unknown"
    assert ev.rcu_lock_sites == [] and ev.dst_ref_sites == []
    assert any("never calls __rcu_read_lock" in r for r in ev.reasons)


def test_lock_without_unlock_is_unknown(objs: dict[str, Path]) -> None:
    ev = inspect_module(objs["nounlock"]).evidence
    assert ev.rcu_lock_sites and not ev.rcu_unlock_sites
    assert ev.verdict == "unknown"


def _sites(*targets: str) -> Sites:
    s = Sites()
    for i, t in enumerate(targets):
        site = CallSite(FN, i * 5, t)
        s.calls.append(site)
        if t in inspection.RCU_LOCK:
            s.lock.append(site)
        elif t in inspection.RCU_UNLOCK:
            s.unlock.append(site)
        elif t in inspection.DST_REF:
            s.dst.append(site)
    return s


@pytest.mark.parametrize(
    ("targets", "inlined", "verdict"),
    [
        (("__rcu_read_lock", "__rcu_read_unlock", "dst_release"), None, "vulnerable"),
        (("__rcu_read_lock", "__rcu_read_unlock", "rcuref_get_slowpath"), None, "vulnerable"),
        (("__rcu_read_lock", "__rcu_read_unlock"), None, "fixed"),
        (("__rcu_read_lock", "__rcu_read_unlock"), ["__sk_dst_get", "dst_dev_rcu"], "fixed"),
        (("__rcu_read_lock", "__rcu_read_unlock"), [], "fixed"),  # DWARF without inline info
        # DWARF contradicting the relocations
        (("__rcu_read_lock", "__rcu_read_unlock", "dst_release"), ["__sk_dst_get"], "unknown"),
        (("__rcu_read_lock", "__rcu_read_unlock"), ["sk_dst_get", "rcu_read_lock"], "unknown"),
        # DWARF showing neither shape
        (("__rcu_read_lock", "__rcu_read_unlock"), ["ipv6_addr_type"], "unknown"),
        (("__rcu_read_lock",), None, "unknown"),
        ((), None, "unknown"),
        # CONFIG_PREEMPT_RCU unset (Debian's 5.10): no call to see, the DWARF decides
        ((), ["rcu_read_lock", "__sk_dst_get", "rcu_read_unlock"], "fixed"),
        ((), ["rcu_read_lock", "__sk_dst_get"], "unknown"),  # never unlocked
        ((), ["rcu_read_lock", "rcu_read_unlock"], "unknown"),  # not the fixed shape
        (("dst_release",), ["sk_dst_get", "rcu_read_lock", "rcu_read_unlock"], "vulnerable"),
    ],
)
def test_verdict_rules(
    targets: tuple[str, ...], inlined: list[str] | None, verdict: str
) -> None:
    got, reasons = decide(FN, _sites(*targets), inlined)
    assert got == verdict, reasons
    assert reasons and all(isinstance(r, str) and r for r in reasons)


NOT_PREEMPTIBLE = "6.1.0-50-arm64 SMP mod_unload modversions aarch64"  # Debian's arm64 6.1


@pytest.mark.parametrize(
    ("targets", "inlined", "vermagic", "verdict"),
    [
        # a stripped module of a non-preemptible kernel: rcu_read_lock is no code there
        ((), None, NOT_PREEMPTIBLE, "fixed"),
        ((), None, "6.1.0-50-s390x SMP mod_unload modversions ", "fixed"),
        (("dst_release",), None, NOT_PREEMPTIBLE, "vulnerable"),
        # a preemptible kernel must show the lock call; no vermagic (an object) tells nothing
        ((), None, "6.1.0-50-amd64 SMP preempt mod_unload modversions ", "unknown"),
        ((), None, "6.1.0-50-rt-arm64 SMP preempt_rt mod_unload modversions aarch64", "unknown"),
        ((), None, None, "unknown"),
        # DWARF, when there, still decides (here: not the fixed shape)
        ((), ["rcu_read_lock", "rcu_read_unlock"], NOT_PREEMPTIBLE, "unknown"),
    ],
)
def test_verdict_on_kernels_without_preemption(
    targets: tuple[str, ...], inlined: list[str] | None, vermagic: str | None, verdict: str
) -> None:
    got, reasons = decide(FN, _sites(*targets), inlined, vermagic)
    assert got == verdict, reasons
    if verdict == "fixed":
        assert "non-preemptible" in reasons[-1] and "absence of the dst reference" in reasons[-1]


def test_lacks_function(objs: dict[str, Path]) -> None:
    with pytest.raises(InspectError, match="does not contain smc_clc_prfx_match: not smc.ko?"):
        inspect_module(objs["other"])


def test_bench_inspect_smoke(objs: dict[str, Path], tmp_path: Path) -> None:
    import json
    import subprocess

    script = Path(__file__).resolve().parents[2] / "bench" / "bench_inspect.py"
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(script), "--module", str(objs["vuln_g"]), "--processes", "1",
           "--values", "1", "--warmups", "1", "--loops", "1", "--quiet", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    names = [b["metadata"]["name"] for b in json.loads(out.read_text())["benchmarks"]]
    assert names == ["inspect_module", "function_bodies"]

