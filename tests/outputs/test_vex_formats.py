"""The three VEX formats from one product model: each accepted by its own validators (and a broken
copy refused by each), all three saying the same of every product as the rows and reports they
come from, and the writer's choices (file names, publisher, formats) as documented.

Synthetic rows and reports (tests/outputs/test_vex_junit.py's), real validators
(tests/vexcheck.py). Real archive data: tests/integration/test_vex_real.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from smcpatch.errors import BadInput, NothingToState
from smcpatch.outputs import csaf, cyclonedx, openvex, products, vex
from smcpatch.outputs.products import ProductStatement, Publisher, Status, VexDocument
from tests.outputs.test_vex_junit import (
    ROWS,
    TIME,
    _row,
    _target_report,
    per_fix_report,
    per_fix_row,
)
from tests.vexcheck import (
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

Doc = dict[str, Any]
VERDICT = {"vulnerable": "affected", "fixed": "fixed", "not_affected": "not_affected",
           "unknown": "under_investigation"}


def scan_statements() -> list[ProductStatement]:
    """Every status, a '+' and a '~' in names and versions, a 6.12 image of bookworm-security."""
    return products.from_scan([*ROWS, _row(
        "fixed", "agree", package="linux-image-6.12.111+deb12-amd64",
        version="6.12.111-1~deb12u1", suite="bookworm-security",
        release="6.12.111+deb12-amd64", changelog_fixed_in="6.12.111-1",
        module_path="lib/modules/6.12.111+deb12-amd64/kernel/net/smc/smc.ko.xz"),
        per_fix_row()])  # a row judged per fix: smc.ko's CVEs and tls.ko's


def verify_statements(directory: Path) -> list[ProductStatement]:
    return products.from_verify([_target_report(directory), per_fix_report(directory)])


def documents(statements: list[ProductStatement]) -> dict[str, str]:
    doc = VexDocument.of(statements, TIME)
    return {name: vex.writer(name).render(doc) for name in vex.FORMATS}


def readings(texts: dict[str, str]) -> dict[str, Any]:
    return {"openvex": read_openvex(json.loads(texts["openvex"])),
            "csaf": read_csaf(json.loads(texts["csaf"])),
            "cyclonedx": read_cyclonedx(json.loads(texts["cyclonedx"]))}


# -- each format, its validators -------------------------------------------------------------------
@pytest.fixture(params=["scan", "verify"])
def texts(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    statements = scan_statements() if request.param == "scan" else verify_statements(tmp_path)
    return documents(statements)


def test_openvex_is_valid(texts: dict[str, str]) -> None:
    assert not openvex_problems(json.loads(texts["openvex"]))


def test_cyclonedx_is_valid(texts: dict[str, str]) -> None:
    assert not cyclonedx_problems(texts["cyclonedx"])


def test_csaf_is_valid_for_the_python_validators(texts: dict[str, str], tmp_path: Path) -> None:
    """`csaf` (schema + mandatory tests) and csaf-lib; BSI's library: test_csaf_bsi below."""
    assert not csaf_problems(json.loads(texts["csaf"]))
    path = tmp_path / "d.csaf.json"
    path.write_text(texts["csaf"])
    assert not csaf_lib_problems(path)


def _product(doc: Doc) -> Doc:
    branch = doc["product_tree"]["branches"][0]
    while "product" not in branch:
        branch = branch["branches"][0]
    product: Doc = branch["product"]
    return product


def _vuln(doc: Doc, cve: str = "CVE-2025-40168") -> Doc:
    vuln: Doc = next(v for v in doc["vulnerabilities"] if v["cve"] == cve)
    return vuln


# broken copies of the scan's CSAF document: fault -> what it breaks
CSAF_FAULTS: dict[str, Callable[[Doc], object]] = {
    "no product_status (6.1.27.7)": lambda d: _vuln(d).pop("product_status"),
    "known_affected without remediation (6.1.27.10)": lambda d: _vuln(d).pop("remediations"),
    "known_not_affected without flag or impact (6.1.27.9)": lambda d: _vuln(d).pop("flags"),
    "no vulnerability notes (6.1.27.5)": lambda d: _vuln(d).pop("notes"),
    "a CWE's wrong name (6.1.11)": lambda d: _vuln(d)["cwe"].update(name="Use-after-free"),
    "publisher category 'tool' (schema)": lambda d: d["document"]["publisher"].update(
        category="tool"),
    "a purl with a bad %-escape (6.1.13)": lambda d: _product(d)[
        "product_identification_helper"].update(purl="pkg:deb/debian/linux%ZZ@1"),
    "a product id used and never defined (6.1.1)": lambda d: _vuln(d)["product_status"][
        "fixed"].append("debian:nothing:1:amd64"),
}
# which validators must refuse each fault (each has blind spots; none is asked to pass a fault)
CSAF_REFUSED_BY = {
    "no product_status (6.1.27.7)": {"csaf-lib", "bsi"},
    "known_affected without remediation (6.1.27.10)": {"csaf", "csaf-lib", "bsi"},
    "known_not_affected without flag or impact (6.1.27.9)": {"csaf", "csaf-lib", "bsi"},
    "no vulnerability notes (6.1.27.5)": {"csaf", "csaf-lib", "bsi"},
    "a CWE's wrong name (6.1.11)": {"csaf", "bsi"},
    "publisher category 'tool' (schema)": {"csaf", "csaf-lib", "bsi"},
    "a purl with a bad %-escape (6.1.13)": {"csaf", "bsi"},
    "a product id used and never defined (6.1.1)": {"csaf", "csaf-lib", "bsi"},
}


def broken_csaf(fault: str) -> Doc:
    doc: Doc = json.loads(documents(scan_statements())["csaf"])
    CSAF_FAULTS[fault](doc)
    return doc


@pytest.mark.parametrize("fault", [f for f, who in CSAF_REFUSED_BY.items() if "csaf" in who])
def test_csaf_refuses_a_broken_copy(fault: str) -> None:
    assert csaf_problems(broken_csaf(fault)), fault


@pytest.mark.parametrize("fault", [f for f, who in CSAF_REFUSED_BY.items() if "csaf-lib" in who])
def test_csaf_lib_refuses_a_broken_copy(fault: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken_csaf(fault)))
    assert csaf_lib_problems(path), fault


def test_csaf_bsi(tmp_path: Path) -> None:
    """BSI's library, in one node call: the scan's and verify's documents pass its strict schema
    and every mandatory test (the VEX profile's 6.1.27.x among them); each broken copy fails."""
    good = {"scan": documents(scan_statements())["csaf"],
            "verify": documents(verify_statements(tmp_path))["csaf"]}
    paths = {}
    for name, text in good.items():
        paths[name] = tmp_path / f"{name}.csaf.json"
        paths[name].write_text(text)
    for n, fault in enumerate(CSAF_FAULTS):
        paths[fault] = tmp_path / f"broken-{n}.json"
        paths[fault].write_text(json.dumps(broken_csaf(fault)))
    result = bsi_results(list(paths.values()))
    assert result["validator"] == "@secvisogram/csaf-validator-lib 2.0.10"
    ran = set(result["ran"])
    assert {"csaf_2_0_strict", "mandatoryTest_6_1_1", "mandatoryTest_6_1_33"} <= ran
    assert {f"mandatoryTest_6_1_27_{n}" for n in range(1, 12)} <= ran  # the VEX profile's
    for name, path in paths.items():
        verdict = result["files"][str(path)]
        if name in good:
            assert verdict["isValid"], (name, verdict["errors"])
            continue
        # refused by the very test the fault is named after
        number = re.search(r"\((?:schema|([\d.]+))\)", name)
        assert number is not None
        expected = (f"mandatoryTest_{number[1].replace('.', '_')}" if number[1]
                    else "csaf_2_0_strict")
        assert not verdict["isValid"], name
        assert expected in {e["test"] for e in verdict["errors"]}, (name, verdict["errors"])


# broken copies of the scan's CycloneDX and OpenVEX documents
CYCLONEDX_FAULTS: dict[str, Callable[[Doc], object]] = {
    "analysis.state 'vulnerable'": lambda d: d["vulnerabilities"][0]["analysis"].update(
        state="vulnerable"),
    "OpenVEX's justification word": lambda d: next(
        v for v in d["vulnerabilities"] if v["analysis"]["state"] == "not_affected")[
            "analysis"].update(justification="component_not_present"),
    "a SHA-256 of 3 hex digits": lambda d: d["components"][0]["hashes"][0].update(content="abc"),
    "a response 'upgrade'": lambda d: next(
        v for v in d["vulnerabilities"] if "response" in v["analysis"])["analysis"].update(
            response=["upgrade"]),
    "an affects ref to no component": lambda d: d["vulnerabilities"][0]["affects"][0].update(
        ref="pkg:deb/debian/nothing@1"),
}
OPENVEX_FAULTS: dict[str, Callable[[Doc], object]] = {
    "affected without action_statement": lambda d: next(
        s for s in d["statements"] if s["status"] == "affected").pop("action_statement"),
    "status 'vulnerable'": lambda d: d["statements"][0].update(status="vulnerable"),
    "no author": lambda d: d.pop("author"),
}


@pytest.mark.parametrize("fault", CYCLONEDX_FAULTS)
def test_cyclonedx_refuses_a_broken_copy(fault: str) -> None:
    doc = json.loads(documents(scan_statements())["cyclonedx"])
    CYCLONEDX_FAULTS[fault](doc)
    assert cyclonedx_problems(json.dumps(doc)), fault


@pytest.mark.parametrize("fault", OPENVEX_FAULTS)
def test_openvex_refuses_a_broken_copy(fault: str) -> None:
    doc = json.loads(documents(scan_statements())["openvex"])
    OPENVEX_FAULTS[fault](doc)
    assert any(p.startswith("vexipy") for p in openvex_problems(doc)), fault


# -- the formats agree -----------------------------------------------------------------------------
def test_the_formats_agree_with_each_other_and_the_scan_rows() -> None:
    read = readings(documents(scan_statements()))
    assert not disagreements(read)
    rows = [r for r in ROWS if r.error is None]
    expected = {key(f"pkg:deb/debian/{r.package}@{r.version}?arch={r.arch}"): r for r in rows}
    for name, said in read.items():
        subset = {k: v for k, v in said.items() if k[2].startswith("linux-image-6.1.0-50")}
        assert set(subset) == set(expected), name  # the same products, the failed one left out
        for product, row in expected.items():
            assert said[product].status == VERDICT[row.verdict], (name, product)
            assert said[product].sha256 == row.deb_sha256, (name, product)
            assert said[product].module_sha256 == (row.module_sha256 or None), (name, product)
        # each purl is spelled as the purl specification's reference library spells it
        assert all(PackageURL.from_string(s.purl).to_string() == s.purl
                   for s in said.values()), name


def test_the_formats_agree_with_verifys_report(tmp_path: Path) -> None:
    report = _target_report(tmp_path)
    read = readings(documents(products.from_verify([report])))
    assert not disagreements(read)
    image = ("CVE-2025-40168", "deb", report.image_package, report.package_version, report.arch)
    ours = ("CVE-2025-40168", "generic", "smc.ko", report.release, report.arch)
    for name, said in read.items():
        assert set(said) == {image, ours}, name
        assert said[image].status == VERDICT[report.shipped.verdict if report.shipped else ""]
        assert said[image].sha256 == report.image_sha256
        assert said[ours].status == "fixed" and said[ours].sha256 is not None


def test_verify_without_debians_module_or_a_loadable_one(tmp_path: Path) -> None:
    """A kernel whose image ships no smc.ko (SMC off, Debian's >= 6.18): the image is not
    affected (no component), and the module built there only to be inspected is not stated."""
    report = _target_report(tmp_path, compile_only=True)
    report.shipped, report.image_module_path = None, ""
    said = products.from_verify([report])  # one per CVE of smc.ko: none of them is there
    assert [s.cve for s in said] == ["CVE-2025-40168", "CVE-2025-40064", "CVE-2025-40139"]
    for image in said:
        assert (image.status, image.justification) == (
            Status.NOT_AFFECTED, products.Justification.COMPONENT_NOT_PRESENT)
        assert image.name == "linux-image-6.1.0-50-amd64" and image.module is None
    read = readings(documents(said))
    assert not disagreements(read)
    assert {s.status for r in read.values() for s in r.values()} == {"not_affected"}


def test_a_disagreement_is_seen() -> None:
    """The agreement check can fail: one format saying another status of one product."""
    texts = documents(scan_statements())
    doc = json.loads(texts["cyclonedx"])
    next(v for v in doc["vulnerabilities"]
         if v["analysis"]["state"] != "in_triage")["analysis"]["state"] = "in_triage"
    problems = disagreements({**readings(texts), "cyclonedx": read_cyclonedx(doc)})
    assert len(problems) == 1 and "status" in problems[0]


# -- what each format says, in its own words -------------------------------------------------------
def test_csaf_document_profile_and_tree() -> None:
    statements = scan_statements()
    doc = json.loads(documents(statements)["csaf"])
    meta = doc["document"]
    assert meta["category"] == "csaf_vex" and meta["csaf_version"] == "2.0"
    assert meta["publisher"] == {"category": "other", "name": Publisher().name,
                                 "namespace": "https://smcpatch.invalid"}
    tracking = meta["tracking"]
    assert tracking["id"].startswith("SMCPATCH-CVE-2025-40168-") and tracking["version"] == "1"
    assert tracking["generator"]["engine"]["name"] == "smcpatch"
    assert tracking["revision_history"][0]["date"] == tracking["current_release_date"]
    [debian] = doc["product_tree"]["branches"]
    assert (debian["category"], debian["name"]) == ("vendor", "Debian")
    package = debian["branches"][0]
    version = package["branches"][0]
    arch = version["branches"][0]
    assert [b["category"] for b in (package, version, arch)] == [
        "product_name", "product_version", "architecture"]
    vuln = _vuln(doc)
    assert vuln["cve"] == "CVE-2025-40168" and vuln["cwe"] == {"id": "CWE-416",
                                                               "name": "Use After Free"}
    assert [f["label"] for f in vuln["flags"]] == ["component_not_present"]
    assert {r["category"] for r in vuln["remediations"]} == {"vendor_fix", "workaround"}
    fix = next(r for r in vuln["remediations"] if r["category"] == "vendor_fix")
    assert "linux 6.1.187-1 or later" in fix["details"]
    assert [t["category"] for t in vuln["threats"]] == ["impact", "impact"]  # 6.1.176, 6.12.107
    # the same facts in another order or at another time: the same id
    later = VexDocument.of(reversed(statements), TIME.replace(year=2027))
    assert json.loads(csaf.render(later))["document"]["tracking"]["id"] == tracking["id"]
    fewer = VexDocument.of(statements[1:], TIME)
    assert json.loads(csaf.render(fewer))["document"]["tracking"]["id"] != tracking["id"]


def test_cyclonedx_analysis(tmp_path: Path) -> None:
    doc = json.loads(documents(verify_statements(tmp_path))["cyclonedx"])
    assert doc["specVersion"] == "1.6" and doc["serialNumber"].startswith("urn:uuid:")
    by_state = {v["analysis"]["state"]: v for v in doc["vulnerabilities"]}
    assert set(by_state) == {"exploitable", "resolved_with_pedigree"}  # Debian's, ours
    exploitable = next(v for v in doc["vulnerabilities"] if v["analysis"]["state"] ==
                       "exploitable" and "6.1.176" in v["bom-ref"])
    assert exploitable["analysis"]["response"] == ["update", "workaround_available"]
    assert exploitable["cwes"] == [416] and exploitable["source"]["name"] == "NVD"
    assert "6.1.187-1" in exploitable["recommendation"]
    assert "pkg:generic/smcpatch/smc.ko" in exploitable["workaround"]
    rebuilt = next(c for c in doc["components"] if c["type"] == "file")
    assert rebuilt["pedigree"]["patches"][0]["resolves"][0]["id"] == "CVE-2025-40168"
    debian = next(c for c in doc["components"] if c["type"] == "operating-system")
    assert debian["components"][0]["bom-ref"] == debian["bom-ref"] + "#" + (
        "lib/modules/6.1.0-50-amd64/kernel/net/smc/shipped-smc.ko")
    not_affected = json.loads(documents(scan_statements())["cyclonedx"])
    assert [v["analysis"]["justification"] for v in not_affected["vulnerabilities"]
            if v["analysis"]["state"] == "not_affected"] == ["code_not_present"]


def test_one_publisher_in_every_format() -> None:
    publisher = Publisher("Example Security Team", "https://security.example.com")
    doc = VexDocument.of(scan_statements(), TIME, publisher)
    assert json.loads(openvex.render(doc))["author"] == "Example Security Team"
    assert json.loads(csaf.render(doc))["document"]["publisher"]["namespace"] == (
        "https://security.example.com")
    supplier = json.loads(cyclonedx.render(doc))["metadata"]["supplier"]
    assert supplier == {"name": "Example Security Team",
                        "url": ["https://security.example.com"]}


def test_the_model_refuses_what_no_format_could_say() -> None:
    with pytest.raises(ValueError, match="justification goes with not_affected"):
        ProductStatement.debian("linux-image-x", "6.1.1-1", "amd64", Status.FIXED, "e",
                                justification=products.Justification.COMPONENT_NOT_PRESENT)
    with pytest.raises(ValueError, match="needs an upgrade or an action"):
        ProductStatement.debian("linux-image-x", "6.1.999-1", "amd64", Status.AFFECTED, "e")
    with pytest.raises(ValueError, match="not a SHA256"):
        ProductStatement.debian("linux-image-x", "6.1.1-1", "amd64", Status.FIXED, "e", "xyz")
    statement = scan_statements()[0]
    with pytest.raises(ValueError, match="two statements for one product"):
        VexDocument.of([statement, statement], TIME)


def test_upgrade_advice_only_below_debians_fix() -> None:
    assert products.debian_fix_after("6.1.176-1") == "6.1.187-1"
    assert products.debian_fix_after("6.12.107-1~deb12u1") == "6.12.111-1"
    assert products.debian_fix_after("6.12.111-1~deb12u1") is None  # at the fix
    assert products.debian_fix_after("6.1.999-1") is None  # past it: no upgrade we know of
    assert products.debian_fix_after("5.10.223-1") is None  # a series Debian's fix is unknown
    affected = ProductStatement.debian("linux-image-6.12.107+deb12-amd64", "6.12.107-1~deb12u1",
                                       "amd64", Status.AFFECTED, "e")
    assert affected.upgrade is not None and "6.12.111-1~deb12u1" in affected.upgrade


# -- the writer: files, formats, options -----------------------------------------------------------
def test_one_format_writes_the_path_several_write_beside_it(tmp_path: Path) -> None:
    one = vex.VexOutput(tmp_path / "v.json", ("csaf",))
    assert one.paths() == {"csaf": tmp_path / "v.json"}
    every = vex.VexOutput(tmp_path / "v.json", ("openvex", "csaf", "cyclonedx"))
    assert every.paths() == {"openvex": tmp_path / "v.openvex.json",
                             "csaf": tmp_path / "v.csaf.json",
                             "cyclonedx": tmp_path / "v.cdx.json"}
    written = vex.write(every, scan_statements(), TIME)
    assert written == every.paths()
    assert json.loads(written["csaf"].read_text())["document"]["category"] == "csaf_vex"
    assert json.loads(written["cyclonedx"].read_text())["bomFormat"] == "CycloneDX"
    assert vex.VexOutput(tmp_path / "vex", ("openvex", "csaf")).paths()["csaf"] == (
        tmp_path / "vex.csaf.json")


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    assert vex.check_formats([]) == ("openvex",)
    assert vex.check_formats(["csaf", "openvex", "csaf"]) == ("csaf", "openvex")
    with pytest.raises(BadInput, match="--vex-format 'spdx': choose openvex, csaf, cyclonedx"):
        vex.check_formats(["spdx"])
    with pytest.raises(BadInput, match="an http\\(s\\) URL"):
        vex.check_publisher(None, "security.example.com")
    with pytest.raises(BadInput, match="a name on one line"):
        vex.check_publisher("two\nlines", None)
    assert vex.check_publisher(" Team ", "https://x.example") == Publisher(
        "Team", "https://x.example")
    with pytest.raises(BadInput, match="not into a device or pipe"):
        vex.check_output(vex.VexOutput(Path("/dev/null"), ("openvex", "csaf")))
    assert vex.check_output(vex.VexOutput(Path("/dev/null"), ("csaf",))).path == Path(
        "/dev/null")
    (tmp_path / "v.csaf.json").mkdir()
    with pytest.raises(BadInput, match="is a directory"):
        vex.check_output(vex.VexOutput(tmp_path / "v.json", ("openvex", "csaf")))


def test_nothing_judged_is_said_not_written_empty(tmp_path: Path) -> None:
    with pytest.raises(NothingToState, match="needs at least one statement"):
        vex.write(vex.VexOutput(tmp_path / "v.json"), products.from_scan(ROWS[-1:]), TIME)
    assert not list(tmp_path.iterdir())
