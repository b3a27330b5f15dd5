"""features.scan: which packages of an index are kernel images, and how a module is judged.

The real archive and its images: tests/integration/test_scan.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smcpatch.outputs import jsonreport, products
from smcpatch.pipeline import images, scan
from smcpatch.plumbing import debmeta, proc
from tests.inspection.test_fixes import SMC_C, SMC_FIXES, TLS_C, TLS_FIX, build


def _stanza(package: str, version: str, depends: str = "kmod, linux-base") -> str:
    return (f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
            f"Depends: {depends}\nFilename: pool/main/l/x/{package}_{version}_amd64.deb\n"
            f"Size: 100\nSHA256: {'0' * 64}\n")


INDEX = "\n".join([
    _stanza("linux-image-6.1.0-50-amd64", "6.1.176-1"),
    _stanza("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1"),
    _stanza("linux-image-6.1.0-50-amd64-unsigned", "6.1.176-1"),  # the signed one exists
    _stanza("linux-image-6.12.118+deb12-rt-amd64-unsigned", "6.12.118-1~deb12u1"),  # no twin
    _stanza("linux-image-6.12-amd64", "6.12.117-1~deb12u1",
            "linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)"),  # a metapackage
    _stanza("linux-image-6.1.0-50-amd64-dbg", "6.1.176-1"),
    _stanza("linux-headers-6.1.0-50-amd64", "6.1.176-1"),
])


@pytest.fixture()
def apt(tmp_path: Path) -> Any:
    if not Path(debmeta.APT_HELPER).exists():
        pytest.skip("apt-helper missing")
    lists = tmp_path / "lists"
    lists.mkdir()
    for suite in ("bookworm", "bookworm-security"):
        (lists / f"m_debian_dists_{suite}_main_binary-amd64_Packages").write_text(INDEX)
    return SimpleNamespace(root=tmp_path)


def test_images_of_an_index(apt: Any) -> None:
    images = scan.list_images(apt, ("bookworm", "bookworm-security"), ("amd64",),
                              ("amd64", "cloud-amd64", "rt-amd64"))
    got = {(i.package, i.flavour, i.release, i.suite, i.also_in) for i in images}
    assert got == {
        ("linux-image-6.1.0-50-amd64", "amd64", "6.1.0-50-amd64", "bookworm",
         ("bookworm-security",)),
        ("linux-image-6.1.0-50-cloud-amd64", "cloud-amd64", "6.1.0-50-cloud-amd64", "bookworm",
         ("bookworm-security",)),
        ("linux-image-6.12.118+deb12-rt-amd64-unsigned", "rt-amd64",
         "6.12.118+deb12-rt-amd64", "bookworm", ("bookworm-security",)),
    }
    only_plain = scan.list_images(apt, ("bookworm",), ("amd64",), ("amd64",))
    assert [i.package for i in only_plain] == ["linux-image-6.1.0-50-amd64"]
    assert images[0].record().name == images[0].package  # the host's arch: not qualified


def test_a_package_without_smc_is_not_affected(tmp_path: Path) -> None:
    row = scan.ScanRow(package="p", version="7.2.13-1", suite="sid", arch="amd64",
                       flavour="amd64", release="7.2.13+deb14-amd64", deb_sha256="0" * 64)
    scan._judge(row, None, None)
    assert (row.verdict, row.changelog) == ("not_affected", "silent")
    assert "no smc.ko" in row.evidence


def test_a_real_module_is_judged(objs: dict[str, Path], tmp_path: Path) -> None:
    """A gcc-built smc_clc.o of the vulnerable shape, with a changelog naming the fix: the
    binary and Debian disagree, which the scan says."""
    module = tmp_path / "x" / "lib/modules/r/kernel/net/smc/smc.ko"
    module.parent.mkdir(parents=True)
    shutil.copy(objs["vuln_nog"], module)
    changelog = tmp_path / "changelog.Debian"
    changelog.write_text("linux (6.1.187-1) bookworm-security; urgency=high\n\n"
                         "  * smc: ... smc_clc_prfx_match(). (CVE-2025-40168)\n\n"
                         " -- K <k@example.org>  Sun, 01 Nov 2026 10:00:00 +0000\n")
    row = scan.ScanRow(package="p", version="6.1.187-1", suite="s", arch="amd64",
                       flavour="amd64", release="r", deb_sha256="0" * 64)
    scan._judge(row, module, changelog)
    assert row.verdict == "vulnerable" and row.evidence.startswith("calls dst_release")
    assert (row.changelog, row.changelog_fixed_in) == ("disagree", "6.1.187-1")
    assert row.module_path == "lib/modules/r/kernel/net/smc/smc.ko"
    assert len(row.module_sha256) == 64


def _deb(tmp_path: Path, files: dict[str, Path]) -> Path:
    """A real .deb holding the given files at their paths (dpkg-deb builds it)."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-image-r\nVersion: 6.12.107-1\nArchitecture: amd64\n"
        "Maintainer: K <k@example.org>\nDescription: test image\n")
    for inside, source in files.items():
        (root / inside).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / inside)
    deb = tmp_path / "linux-image-r_6.12.107-1_amd64.deb"
    proc.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
             check=True, capture_output=True, timeout=120)
    return deb


def test_every_fix_is_judged_in_smc_ko_and_tls_ko(tmp_path: Path) -> None:
    """An image with a vulnerable smc.ko and a fixed tls.ko (compiled objects of each shape):
    both are taken out of the package, each fix judged on its own, and each CVE stated in VEX
    from the module that carries it; the row's JSON is in the scan schema (conftest checks)."""
    smc = build(tmp_path, SMC_C, "smc", "PREEMPT_RCU")
    tls = build(tmp_path, TLS_C, "tls", "PREEMPT_RCU", "INLINE_GET", "FIXED",
                filename="tls_device.c")
    smc_inside = "lib/modules/r/kernel/net/smc/smc.ko"
    tls_inside = "lib/modules/r/kernel/net/tls/tls.ko"
    deb = _deb(tmp_path, {smc_inside: smc, tls_inside: tls})
    (tmp_path / "x").mkdir()
    found = images.extract_module(deb, tmp_path / "x")
    assert (found.module_path, found.tls_module_path) == (smc_inside, tls_inside)
    assert found.tls_module is not None and found.tls_module.read_bytes() == tls.read_bytes()
    row = scan.ScanRow(package="linux-image-r", version="6.12.107-1", suite="s", arch="amd64",
                       flavour="amd64", release="r", deb_sha256="0" * 64,
                       module_path=found.module_path)
    scan._judge(row, found.module, found.changelog)
    scan._judge_tls(row, found.tls_module, found.tls_module_path)
    assert row.verdict == "vulnerable"
    assert {f["fix"]: f["verdict"] for f in row.fixes} == {
        **dict.fromkeys(SMC_FIXES, "vulnerable"), TLS_FIX: "fixed"}
    assert row.tls_module_path == tls_inside and len(row.tls_module_sha256) == 64
    said = {s.cve: s for s in products.from_scan([row])}
    assert [said[c].status.value for c in said] == ["affected"] * 3 + ["fixed"]
    assert said["CVE-2025-40149"].module == products.File(tls_inside, row.tls_module_sha256)
    document = jsonreport.scan_document([row], ("s",), ("amd64",), "2026-12-08T03:00:00Z")
    jsonreport.write_json(tmp_path / "scan.json", document)


def test_an_image_without_tls_ko_judges_smc_ko_alone(tmp_path: Path) -> None:
    deb = _deb(tmp_path, {"lib/modules/r/kernel/net/smc/smc.ko":
                          build(tmp_path, SMC_C, "smc", "PREEMPT_RCU", "FIXED")})
    (tmp_path / "x").mkdir()
    found = images.extract_module(deb, tmp_path / "x")
    assert found.module is not None and found.tls_module is None
    row = scan.ScanRow(package="p", version="6.12.117-1", suite="s", arch="amd64",
                       flavour="amd64", release="r", deb_sha256="0" * 64)
    scan._judge(row, found.module, found.changelog)
    scan._judge_tls(row, found.tls_module, found.tls_module_path)
    assert {f["module"] for f in row.fixes} == {"smc"} and row.tls_module_path == ""
    assert {f["verdict"] for f in row.fixes} == {"fixed"}


def test_a_result_of_an_older_recipe_is_judged_again(tmp_path: Path) -> None:
    """The cache key holds what is judged: a result saved before per-fix verdicts (recipe 1)
    is not read back."""
    image = scan.Image("p", "1", "amd64", "amd64", "r", "s", "f", 1, "0" * 64)
    row = scan.ScanRow(package="p", version="1", suite="s", arch="amd64", flavour="amd64",
                       release="r", deb_sha256="0" * 64, verdict="fixed")
    entry = tmp_path / "e.json"
    scan._save(entry, row)
    assert scan._cached_row(entry, image) is not None
    data = {k: v for k, v in json.loads(entry.read_text()).items() if k != "digest"}
    data["recipe"] = 1
    entry.write_text(json.dumps({**data, "digest": scan._digest(data)}))
    assert scan._cached_row(entry, image) is None
