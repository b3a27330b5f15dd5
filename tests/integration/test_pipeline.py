"""The whole pipeline on real Debian kernels: fetch, classify, patch, build, inspect, report.

Every kernel of the default matrix, cold the first time (download + build), from the cache after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch import inspection
from smcpatch.kernels.request import KernelRequest
from smcpatch.kernels.resolve import resolve
from smcpatch.kernels.targets import Target
from smcpatch.outputs import jsonreport
from smcpatch.pipeline import prepare as pipeline
from smcpatch.pipeline import report
from smcpatch.pipeline.fetch import Workspace
from smcpatch.plumbing.cache import Cache
from tests.schemas import assert_valid

pytestmark = pytest.mark.integration


ROOT = Path(__file__).resolve().parents[2]


KERNELS = ["6.1.176", "6.1.192", "6.12.107", "6.12.117"]


@pytest.fixture(scope="module", params=KERNELS)
def verified(request: pytest.FixtureRequest, test_cache: Cache, matrix: dict[str, Target],
             workspace_for: Callable[[str], Workspace]) -> tuple[Target, report.TargetReport]:
    target = matrix[request.param]
    return target, pipeline.verify_target(test_cache, target, pipeline.Options(),
                                          workspace=workspace_for(request.param))


def test_verify_reaches_a_verified_fixed_module(
        verified: tuple[Target, report.TargetReport]) -> None:
    target, r = verified
    assert r.error is None, r.error
    assert r.ok, r.problems
    assert r.source_state == target.expect
    assert r.before and r.before.verdict == "vulnerable"
    assert r.after and r.after.verdict == "fixed"
    if target.expect == "vulnerable":
        assert (r.patch, r.before_variant) == ("applied", "as-shipped")
    else:
        assert (r.patch, r.before_variant) == ("already-present", "reverted-for-before")
    assert r.vermagic_ok and r.modversions_ok
    assert r.changed_functions == ["smc_clc_prfx_match"]


def test_evidence_is_by_principle(verified: tuple[Target, report.TargetReport]) -> None:
    _, r = verified
    assert r.before and r.after
    before, after = r.before.evidence, r.after.evidence
    assert {s["target"] for s in before["dst_reference_sites"]} & {"dst_release"}
    assert after["dst_reference_sites"] == []
    assert after["rcu_read_lock_sites"] and after["rcu_read_unlock_sites"]
    size = sum(after["fragments"].values())
    assert all(0 <= s["offset"] < size for s in after["rcu_read_lock_sites"])
    # our builds carry DWARF: the inlined helpers tell sk_dst_get from __sk_dst_get
    assert "__sk_dst_get" in after["dwarf_inlined"] and "sk_dst_get" not in after["dwarf_inlined"]
    assert "sk_dst_get" in before["dwarf_inlined"]


def test_shipped_module_matches_our_build_of_the_same_source(
        verified: tuple[Target, report.TargetReport]) -> None:
    target, r = verified
    assert r.shipped is not None
    assert r.shipped.verdict == target.expect
    assert not r.shipped.has_dwarf  # Debian strips its modules
    same = r.shipped_same_as_after if target.expect == "fixed" else r.shipped_same_as_before
    assert same is True


def test_after_build_recompiles_only_the_patched_file(
        verified: tuple[Target, report.TargetReport]) -> None:
    _, r = verified
    # modpost regenerates smc.mod.c when the module's imports change (the fix drops
    # dst_release): its object may rebuild too, but of our sources only smc_clc.c recompiles
    sources = [name for name in r.recompiled_for_after if not name.endswith(".mod.o")]
    assert sources == ["smc_clc.o"]


def test_warm_rerun_downloads_extracts_and_compiles_nothing(
        verified: tuple[Target, report.TargetReport], test_cache: Cache,
        workspace_for: Callable[[str], Workspace]) -> None:
    target, first = verified
    again = pipeline.verify_target(test_cache, target, pipeline.Options())
    assert again.ok
    assert again.from_cache == {"fetch": True, "build": True, "inspect": True}
    assert again.timings_detail["download"] == again.timings_detail["extract"] == 0.0
    assert again.to_json()["after"]["evidence"] == first.to_json()["after"]["evidence"]


def test_vendor_tree_is_never_modified(test_cache: Cache, matrix: dict[str, Target],
                                       workspace_for: Callable[[str], Workspace]) -> None:
    ws = workspace_for("6.1.176")
    clc = ws.source_tree / "net" / "smc" / "smc_clc.c"
    text = clc.read_text()
    pipeline.verify_target(test_cache, matrix["6.1.176"], pipeline.Options(), workspace=ws)
    assert clc.read_text() == text
    assert "= sk_dst_get(clcsock->sk)" in text


@pytest.mark.parametrize("version", KERNELS)
def test_inv_inspect_classifies_debians_shipped_module(
        version: str, matrix: dict[str, Target], workspace_for: Callable[[str], Workspace]) -> None:
    ws = workspace_for(version)
    assert ws.shipped_module is not None
    proc = subprocess.run([sys.executable, "-m", "invoke", "inspect", "--json", "--module",
                           str(ws.shipped_module), "--release", ws.target.release,
                           "--symvers", str(ws.symvers)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    data = json.loads(proc.stdout)
    assert_valid(data, "smcpatch-inspect/1")
    assert data["verdict"] == matrix[version].expect
    assert proc.returncode == (0 if matrix[version].expect == "fixed" else 1)
    assert data["vermagic_ok"] and data["modversions_ok"]
    assert data["stripped"] and not data["has_dwarf"]


def test_json_report_schema(verified: tuple[Target, report.TargetReport], tmp_path: Path) -> None:
    _, r = verified
    path = tmp_path / "report.json"
    jsonreport.write_json(path, jsonreport.document([r]))
    doc = json.loads(path.read_text())
    assert_valid(doc, "smcpatch-report/1")  # every key documented (docs/json.md)
    assert doc["schema"] == "smcpatch-report/1" and doc["ok"] is True
    entry = doc["targets"][0]
    for key in ("version", "flavour", "release", "source_state", "patch", "vermagic_ok",
                "modversions_ok", "changed_functions", "timings", "ok"):
        assert key in entry
    assert entry["before"]["verdict"] == "vulnerable" and entry["after"]["verdict"] == "fixed"


def test_modversions_check_catches_a_foreign_kernel(
        workspace_for: Callable[[str], Workspace]) -> None:
    """A 6.1 module against 6.12's Module.symvers must fail: the check can fail."""
    old, new = workspace_for("6.1.176"), workspace_for("6.12.117")
    assert old.shipped_module is not None
    info = inspection.inspect_module(old.shipped_module)
    ok, mismatches = inspection.check_modversions(info, inspection.read_module_symvers(new.symvers))
    assert not ok and mismatches
    assert not inspection.check_vermagic(info, new.target.release)[0]


def test_all_fixes_every_function_verified(test_cache: Cache, matrix: dict[str, Target],
                                           workspace_for: Callable[[str], Workspace]) -> None:
    """--fix all: the three sibling fixes too, each function judged by the same principle."""
    options = pipeline.Options(fixes=["all"])
    r = pipeline.verify_target(test_cache, matrix["6.1.176"], options,
                               workspace=workspace_for("6.1.176"))
    assert r.ok, (r.error, r.problems)
    assert {f["id"] for f in r.fixes} == {"CVE-2025-40168", "CVE-2025-40139", "CVE-2025-40064",
                                          "smc_vlan_by_tcpsk-0b0e4d51c655"}
    judged = {(v["function"], v["before"], v["after"]) for v in r.sibling_verdicts}
    assert judged == {(fn, "vulnerable", "fixed") for fn in (
        "smc_clc_prfx_set", "smc_pnet_find_roce_resource", "smc_pnet_find_ism_resource",
        "smc_vlan_by_tcpsk")}
    assert {"smc_clc_prfx_match", "smc_vlan_by_tcpsk"} <= set(r.changed_functions)


def test_rt_flavour_builds_against_its_own_common_rt_headers(
        test_cache: Cache, matrix: dict[str, Target]) -> None:
    target = matrix["6.12.107"].with_flavour("rt-amd64")
    r = pipeline.verify_target(test_cache, target, pipeline.Options())
    assert r.ok, (r.error, r.problems)
    assert r.release == "6.12.107+deb12-rt-amd64"
    assert r.after is not None and r.after.vermagic is not None
    assert r.after.vermagic.startswith("6.12.107+deb12-rt-amd64 ")
    assert r.shipped is not None and r.shipped.verdict == "vulnerable"
    assert r.shipped_same_as_before is True


def test_kernel_outside_the_matrix_is_resolved_from_the_archive(test_cache: Cache) -> None:
    """`--kernel 6.1.187`: the first Debian 6.1 with the fix, not pinned in kernels.toml. Its own
    linux-kbuild-6.1 is gone from the archive; a newer one of the series builds the module and
    the vermagic/modversions checks vouch for the result."""

    [target] = resolve(test_cache, KernelRequest(("6.1.187",), flavour="amd64"))
    assert (target.package_version, target.release) == ("6.1.187-1", "6.1.0-53-amd64")
    r = pipeline.verify_target(test_cache, target, pipeline.Options())
    assert r.ok, (r.error, r.problems)
    assert r.source_state == "fixed" and r.vermagic_ok and r.modversions_ok
    assert any("is gone from the archive" in note for note in r.notes)
