"""`inv scan` on the real archive: every bookworm and bookworm-security amd64 image (plain
flavour here, to keep a cold run's downloads near 1.3 GB), judged from its own smc.ko, beside
Debian's changelog, with OpenVEX and JUnit written and checked.

Results are cached by package SHA256 in the shared test cache: a warm rescan reads two Packages
indices and those results only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from smcpatch.plumbing.cache import Cache
from tests.faults import inv
from tests.vexcheck import openvex_problems

pytestmark = pytest.mark.integration

FIXED_6_1 = (6, 1, 187)
FIXED_6_12 = (6, 12, 111)


def _upstream(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in version.split("-")[0].split(".")[:3])


@pytest.fixture(scope="module")
def scanned(test_cache: Cache, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Any, Path, float]:
    out = tmp_path_factory.mktemp("scan")
    args = ("scan", "--suite", "bookworm", "--suite", "bookworm-security", "--flavour", "amd64",
            "--cache", str(test_cache.root), "--json", str(out / "r.json"), "--vex",
            str(out / "v.json"), "--junit", str(out / "j.xml"))
    proc = inv(*args, timeout=3600)
    started = time.monotonic()
    again = inv(*args)
    return (proc, again), out, time.monotonic() - started


def test_every_image_judged_and_the_changelogs_agree(scanned: tuple[Any, Path, float]) -> None:
    (proc, _), out, _ = scanned
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    images = json.loads((out / "r.json").read_text())["images"]
    assert len(images) >= 10 and {i["suite"] for i in images} == {"bookworm",
                                                                  "bookworm-security"}
    for image in images:
        assert image["error"] is None, image
        assert image["flavour"] == "amd64" and image["arch"] == "amd64"
        fixed_from = FIXED_6_12 if image["version"].startswith("6.12.") else FIXED_6_1
        expected = "fixed" if _upstream(image["version"]) >= fixed_from else "vulnerable"
        assert image["verdict"] == expected, image
        # Debian names the CVE in every fixed image's changelog, in none of the others
        assert image["changelog"] == ("agree" if expected == "fixed" else "silent"), image
        # every smc fix judged, each as the version says (Debian took the series at once);
        # tls.ko's CVE-2025-40149: fixed in every image the archive serves
        smc = {f["fix"]: f["verdict"] for f in image["fixes"] if f["module"] == "smc"}
        assert set(smc.values()) == {expected} and len(smc) == 4, image
        tls = [f["verdict"] for f in image["fixes"] if f["module"] == "tls"]
        assert tls == ["fixed"] and image["tls_module_path"].endswith(
            "/kernel/net/tls/tls.ko" if image["version"].startswith("6.1.") else
            "/kernel/net/tls/tls.ko.xz"), image
        assert len(image["module_sha256"]) == 64 and image["module_path"].endswith(
            "/kernel/net/smc/smc.ko" if image["version"].startswith("6.1.") else
            "/kernel/net/smc/smc.ko.xz")
    verdicts = {i["verdict"] for i in images}
    assert verdicts == {"fixed", "vulnerable"}  # both sides of the fix
    assert "60 images" not in proc.stdout  # only the plain flavour was asked for


def test_vex_and_junit(scanned: tuple[Any, Path, float]) -> None:
    _, out, _ = scanned
    images = json.loads((out / "r.json").read_text())["images"]
    document = json.loads((out / "v.json").read_text())
    assert not openvex_problems(document)
    # one statement per CVE per image: three smc CVEs and tls.ko's (0b0e4d51c655 has no CVE id)
    assert len(document["statements"]) == 4 * len(images)
    by_purl = {s["products"][0]["@id"]: s for s in document["statements"]
               if s["vulnerability"]["name"] == "CVE-2025-40168"}
    for image in images:
        statement = by_purl[image["purl"]]
        assert statement["status"] == {"fixed": "fixed", "vulnerable": "affected"}[
            image["verdict"]]
        assert statement["products"][0]["subcomponents"][0]["hashes"]["sha-256"] == image[
            "module_sha256"]
    [suite] = list(JUnitXml.fromfile(str(out / "j.xml")))
    # a case per image and one per fix judged in it (four smc fixes, tls.ko's)
    assert suite.tests == len(images) + sum(len(i["fixes"]) for i in images)
    assert suite.failures == 5 * sum(1 for i in images if i["verdict"] == "vulnerable")


def test_a_warm_rescan_downloads_nothing_and_is_fast(scanned: tuple[Any, Path, float]) -> None:
    (_, again), _, seconds = scanned
    assert again.returncode == 0, again.stderr[-2000:]
    assert "downloaded 0 MB" in again.stdout
    assert seconds < 10  # docs/performance.md has the measured figures; this is a bound
    # for a loaded CI machine, where the command's own start-up is most of it


def test_a_suite_that_is_not_served_is_one_line(test_cache: Cache) -> None:
    proc = inv("scan", "--suite", "nosuchsuite", "--cache", str(test_cache.root))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: nosuchsuite: not a suite the host's mirrors serve ("), \
        proc.stderr
    assert "bookworm-security" in proc.stderr
