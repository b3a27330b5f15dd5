"""The three VEX formats on real data: a scan of bookworm-security (every amd64 image of the plain
flavour, judged from its own smc.ko) and a verify of a vulnerable and a fixed kernel, each
writing OpenVEX, CSAF and CycloneDX at once beside its JSON report. Each document is accepted by
its own validators (BSI's CSAF library: one node call for both runs); the three formats say the
same of every product, and the same as the JSON report; writing them is fast.

Scan results and verify builds come from the shared test cache (tests/integration/test_scan.py
and the verify tests make the same ones): warm, this module takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from smcpatch.outputs import products, vex
from smcpatch.pipeline.scan import ScanRow
from smcpatch.plumbing.cache import Cache
from tests.faults import inv
from tests.vexcheck import (
    Key,
    bsi_results,
    csaf_lib_problems,
    csaf_problems,
    cyclonedx_problems,
    disagreements,
    key,
    openvex_problems,
    read_csaf,
    read_cyclonedx,
    read_openvex,
)

pytestmark = pytest.mark.integration

FORMATS = ("--vex-format", "openvex", "--vex-format", "csaf", "--vex-format", "cyclonedx")
FILES = {"openvex": "v.openvex.json", "csaf": "v.csaf.json", "cyclonedx": "v.cdx.json"}
VERDICT = {"vulnerable": "affected", "fixed": "fixed", "not_affected": "not_affected",
           "unknown": "under_investigation"}


def _run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = inv(*args, "--json", str(out / "r.json"), "--vex", str(out / "v.json"), *FORMATS,
               timeout=3600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    for name in ("OpenVEX", "CSAF VEX", "CycloneDX VEX"):
        assert f"{name}: {out}" in proc.stdout, name
    return proc


@pytest.fixture(scope="module")
def scanned(test_cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scan-vex")
    _run(out, "scan", "--suite", "bookworm-security", "--flavour", "amd64",
         "--cache", str(test_cache.root))
    return out


@pytest.fixture(scope="module")
def verified(test_cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify-vex")
    _run(out, "verify", "--kernel", "6.1.176", "--kernel", "6.12.117",
         "--cache", str(test_cache.root))
    return out


@pytest.fixture(params=["scanned", "verified"])
def out(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(request.param)
    return path


def _load(out: Path, fmt: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / FILES[fmt]).read_text())
    return data


def _read(out: Path) -> dict[str, dict[Key, Any]]:
    return {"openvex": read_openvex(_load(out, "openvex")),
            "csaf": read_csaf(_load(out, "csaf")),
            "cyclonedx": read_cyclonedx(_load(out, "cyclonedx"))}


def test_each_format_is_valid_for_its_python_validators(out: Path) -> None:
    assert not openvex_problems(_load(out, "openvex"))
    assert not cyclonedx_problems((out / FILES["cyclonedx"]).read_text())
    assert not csaf_problems(_load(out, "csaf"))
    assert not csaf_lib_problems(out / FILES["csaf"])


def test_bsi_accepts_both_csaf_documents(scanned: Path, verified: Path) -> None:
    paths = [scanned / FILES["csaf"], verified / FILES["csaf"]]
    result = bsi_results(paths)
    assert "mandatoryTest_6_1_27_10" in result["ran"]
    for path in paths:
        assert result["files"][str(path)] == {"isValid": True, "errors": []}, path


def test_the_scan_formats_agree_with_each_other_and_the_json(scanned: Path) -> None:
    read = _read(scanned)
    assert not disagreements(read)
    images = json.loads((scanned / "r.json").read_text())["images"]
    assert len(images) >= 10 and all(i["error"] is None for i in images)
    for name, said in read.items():
        primary = {k: v for k, v in said.items() if k[0] == "CVE-2025-40168"}
        assert set(primary) == {key(i["purl"]) for i in images}, name
        for image in images:
            # every CVE judged in the image, each as its fix's verdict (tls.ko's too)
            for fix in image["fixes"]:
                if fix["cve"] is None:  # 0b0e4d51c655: judged, never a VEX statement
                    continue
                per_cve = said[key(image["purl"], fix["cve"])]
                assert per_cve.status == VERDICT[fix["verdict"].replace("undecided",
                                                                        "unknown")], name
                module = image["tls_module_sha256" if fix["module"] == "tls"
                               else "module_sha256"]
                assert per_cve.module_sha256 == module, (name, image["purl"], fix["cve"])
            statement = said[key(image["purl"])]
            assert statement.purl == image["purl"], name  # one spelling everywhere
            assert statement.status == VERDICT[image["verdict"]], (name, image["purl"])
            assert statement.sha256 == image["deb_sha256"], (name, image["purl"])
            assert statement.module_sha256 == image["module_sha256"], (name, image["purl"])
    statuses = {s.status for s in read["csaf"].values()}
    assert statuses == {"affected", "fixed"}  # bookworm-security has both sides of the fix


def test_the_verify_formats_agree_with_each_other_and_the_json(verified: Path) -> None:
    read = _read(verified)
    assert not disagreements(read)
    targets = json.loads((verified / "r.json").read_text())["targets"]
    expected = {}
    for t in targets:
        assert t["ok"] and len(t["image_sha256"]) == 64, t["answer"]
        # the default fix built; every smc CVE judged in Debian's module and in ours
        assert [f["id"] for f in t["fixes"]] == ["CVE-2025-40168"]
        ours = {f["cve"]: f["verdict"] for f in t["after"]["fixes"]}
        for fix in t["shipped"]["fixes"]:
            if fix["cve"] is None:  # 0b0e4d51c655: judged, never a VEX statement
                continue
            image = (fix["cve"], "deb", t["image_package"], t["package_version"], t["arch"])
            expected[image] = (VERDICT[fix["verdict"]], t["image_sha256"])
            expected[(fix["cve"], "generic", "smc.ko", t["release"], t["arch"])] = (
                "fixed" if fix["cve"] == "CVE-2025-40168" else VERDICT[ours[fix["cve"]]], None)
    for name, said in read.items():
        assert set(said) == set(expected), name
        for product, (status, sha256) in expected.items():
            assert said[product].status == status, (name, product)
            if sha256:
                assert said[product].sha256 == sha256, (name, product)
    statuses = sorted(read["openvex"][p].status for p in expected
                      if p[:2] == ("CVE-2025-40168", "deb"))
    assert statuses == ["affected", "fixed"]  # 6.1.176 Debian's vulnerable, 6.12.117 fixed
    assert {p[0] for p in expected} == {"CVE-2025-40168", "CVE-2025-40064", "CVE-2025-40139"}


def test_writing_every_format_is_fast(scanned: Path, tmp_path: Path) -> None:
    """The scan's warm path is its cached results: what --vex adds is the model and the
    writers (measured in the docs); a bound here, for a loaded machine."""
    rows = [ScanRow(**{k: v for k, v in image.items() if k != "purl"})
            for image in json.loads((scanned / "r.json").read_text())["images"]]
    output = vex.VexOutput(tmp_path / "v.json", tuple(vex.FORMATS))
    vex.write(output, products.from_scan(rows))  # the writers' imports, once
    started = time.perf_counter()
    written = vex.write(output, products.from_scan(rows))
    assert time.perf_counter() - started < 1.0
    assert sorted(p.name for p in written.values()) == sorted(FILES.values())
