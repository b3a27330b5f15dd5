"""The command line on real archive lookups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.plumbing.cache import Cache
from tests import faults
from tests.test_cli import assert_one_line_error, inv


@pytest.mark.integration
def test_unknown_kernel_lists_what_the_archive_has(tmp_path: Path) -> None:
    proc = inv("verify", "--kernel", "6.1.1", cache=tmp_path)
    assert_one_line_error(proc, 2, "unknown kernel 6.1.1")
    assert "6.1.176-1" in proc.stderr  # the archive's versions are listed


@pytest.mark.integration
def test_verify_writes_vex_and_junit(test_cache: Cache, tmp_path: Path) -> None:
    """A warm verify of the vulnerable 6.1.176: Debian's image is affected, our module fixed;
    one JUnit test case per check, none failing."""
    from junitparser import JUnitXml

    from tests.vexcheck import openvex_problems

    proc = faults.inv("verify", "--kernel", "6.1.176", "--cache", str(test_cache.root), "--vex",
                      str(tmp_path / "v.json"), "--junit", str(tmp_path / "j.xml"),
                      timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    document = json.loads((tmp_path / "v.json").read_text())
    assert not openvex_problems(document)
    # one statement per CVE of smc.ko per product; ours built with the default fix alone
    statuses = [(s["vulnerability"]["name"], s["products"][0]["@id"].split("@")[0], s["status"])
                for s in document["statements"]]
    cves = ["CVE-2025-40168", "CVE-2025-40064", "CVE-2025-40139"]
    assert statuses == [
        *((cve, "pkg:deb/debian/linux-image-6.1.0-50-amd64", "affected") for cve in cves),
        ("CVE-2025-40168", "pkg:generic/smcpatch/smc.ko", "fixed"),
        *((cve, "pkg:generic/smcpatch/smc.ko", "affected") for cve in cves[1:])]
    [suite] = list(JUnitXml.fromfile(str(tmp_path / "j.xml")))
    names = {case.name for case in suite}
    assert {"vermagic", "modversions", "after-module fixed", "Debian's module"} <= names
    assert "after-module fixed: CVE-2025-40168" in names
    assert {f"Debian's module: {label}" for label in (*cves, "0b0e4d51c655")} <= names
    assert suite.failures == 0 and suite.errors == 0
