"""features.scan: which packages of an index are kernel images, and how a module is judged.

The real archive and its images: tests/integration/test_scan.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smcpatch.pipeline import scan
from smcpatch.plumbing import debmeta


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
