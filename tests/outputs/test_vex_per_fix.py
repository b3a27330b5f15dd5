"""Every output per fix: one VEX statement per CVE of the series per product (smc.ko's CVEs and
tls.ko's CVE-2025-40149; the fix without a CVE id none), verify's per-fix checks, and JUnit's
case per fix. The documents' validity in all three formats, validators and all, is
tests/outputs/test_vex_formats.py's (its scan and verify documents hold these rows)."""

from __future__ import annotations

import json
from pathlib import Path

from smcpatch.cve import vulnerabilities
from smcpatch.outputs import csaf, cyclonedx, jsonreport, junit, openvex, products
from smcpatch.outputs.products import Status, VexDocument
from smcpatch.pipeline.report import TargetReport
from tests.outputs.test_vex_junit import TIME, fixes_json, per_fix_report, per_fix_row
from tests.vexcheck import disagreements, read_csaf, read_cyclonedx, read_openvex

SMC_CVES = ["CVE-2025-40168", "CVE-2025-40064", "CVE-2025-40139"]


def test_the_series_cves_and_none_for_the_fix_without_one() -> None:
    assert list(vulnerabilities()) == [*SMC_CVES, "CVE-2025-40149"]
    assert vulnerabilities()["CVE-2025-40149"].module == "tls"
    assert vulnerabilities()["CVE-2025-40149"].debian_fixed == {"6.1": "6.1.162-1",
                                                                "6.12": "6.12.69-1"}
    assert all("0b0e4d51c655" not in v.upstream_fix for v in vulnerabilities().values())


def test_scan_one_statement_per_cve_each_from_its_module() -> None:
    row = per_fix_row()
    said = {s.cve: s for s in products.from_scan([row])}
    assert list(said) == [*SMC_CVES, "CVE-2025-40149"]
    assert [said[c].status for c in said] == [Status.AFFECTED, Status.UNDER_INVESTIGATION,
                                              Status.AFFECTED, Status.FIXED]
    assert {said[c].module.path for c in SMC_CVES} == {row.module_path}  # type: ignore[union-attr]
    tls = said["CVE-2025-40149"]
    assert tls.module is not None and tls.module.path.endswith("net/tls/tls.ko.xz")
    assert tls.module.sha256 == "7e" * 32
    assert "get_netdev_for_sock" in tls.evidence
    # the fix without a CVE id is judged (vulnerable here) but no VEX statement
    assert all("0b0e4d51c655" not in s.evidence for s in said.values())
    # Debian's version that fixed each CVE: CVE-2025-40168's for the smc ones
    assert said["CVE-2025-40139"].upgrade is not None
    assert "6.12.111-1" in said["CVE-2025-40139"].upgrade


def test_scan_an_image_without_tls_ko_is_not_affected_by_its_cve() -> None:
    row = per_fix_row(tls_module_path="", tls_module_sha256="")
    row.fixes = [f for f in row.fixes if f["module"] == "smc"]
    [tls] = [s for s in products.from_scan([row]) if s.cve == "CVE-2025-40149"]
    assert tls.status is Status.NOT_AFFECTED and "ships no tls.ko" in tls.evidence


def test_each_format_carries_each_cve_for_the_same_product() -> None:
    doc = VexDocument.of(products.from_scan([per_fix_row()]), TIME)
    assert doc.cves == [*SMC_CVES, "CVE-2025-40149"]
    open_doc, csaf_doc = openvex.build(doc), csaf.build(doc)
    cdx = json.loads(cyclonedx.render(doc))
    assert [s["vulnerability"]["name"] for s in open_doc["statements"]] == doc.cves
    # CSAF: one vulnerability per CVE, each with its product_status; one product for them all
    assert [v["cve"] for v in csaf_doc["vulnerabilities"]] == doc.cves
    statuses = {v["cve"]: v["product_status"] for v in csaf_doc["vulnerabilities"]}
    assert statuses["CVE-2025-40149"] == {"fixed": [doc.statements[0].product_id]}
    assert statuses["CVE-2025-40064"] == {"under_investigation": [doc.statements[0].product_id]}
    [product] = [b for b in csaf_doc["product_tree"]["branches"][0]["branches"]]
    hashes = product["branches"][0]["branches"][0]["product"][
        "product_identification_helper"]["hashes"]
    assert [h["filename"].rsplit("/", 1)[-1] for h in hashes] == [
        "linux-image-6.12.107+deb12-amd64_6.12.107-1~deb12u1_amd64.deb", "smc.ko.xz",
        "tls.ko.xz"]
    # CycloneDX: the package once, smc.ko and tls.ko nested; an entry per CVE (and product)
    [package] = cdx["components"]
    assert sorted(c["name"] for c in package["components"]) == ["smc.ko.xz", "tls.ko.xz"]
    assert sorted(v["id"] for v in cdx["vulnerabilities"]) == sorted(doc.cves)
    assert {a["ref"] for v in cdx["vulnerabilities"] for a in v["affects"]} == {package["bom-ref"]}
    read = {"openvex": read_openvex(open_doc), "csaf": read_csaf(csaf_doc),
            "cyclonedx": read_cyclonedx(cdx)}
    assert not disagreements(read)
    assert {k[0] for k in read["csaf"]} == set(doc.cves)


def test_verify_checks_every_chosen_fix_per_module() -> None:
    report = per_fix_report()
    names = [c.name for c in report.checks()]
    assert "after-module fixed: CVE-2025-40168" in names
    assert "before-module vulnerable: CVE-2025-40168" in names
    assert not any("CVE-2025-40139" in n for n in names)  # not chosen: not checked
    assert report.ok
    # chosen and not fixed after: the check fails, and the target is not verified
    bad = per_fix_report()
    assert bad.after is not None
    bad.after.fixes = fixes_json({"CVE-2025-40168": "vulnerable"})
    bad.finish()
    assert not bad.ok
    assert "after-module is vulnerable for CVE-2025-40168" in bad.problems
    # --fix all: every fix of the series with a signature is checked, the one without a CVE too
    every = per_fix_report(fixes=[{"id": i, "state": "vulnerable", "variant": "main",
                                   "functions": "", "detail": ""}
                                  for i in ("CVE-2025-40168", "CVE-2025-40139", "CVE-2025-40064",
                                            "smc_vlan_by_tcpsk-0b0e4d51c655")])
    assert [label for _, label in every.chosen_fixes()] == [
        "CVE-2025-40168", "CVE-2025-40139", "CVE-2025-40064", "0b0e4d51c655"]
    assert not every.ok  # our after-module was built with CVE-2025-40168's fix alone
    assert "after-module is vulnerable for 0b0e4d51c655" in every.problems
    assert report.shipped_fixes()[0] == ("CVE-2025-40168", "vulnerable")


def test_verify_per_cve_statements(tmp_path: Path) -> None:
    said = products.from_verify([per_fix_report(tmp_path)])
    image = {s.cve: s for s in said if s.origin == "debian"}
    ours = {s.cve: s for s in said if s.origin == "smcpatch"}
    assert list(image) == list(ours) == SMC_CVES  # no statement for 0b0e4d51c655
    assert all(s.status is Status.AFFECTED for s in image.values())
    assert ours["CVE-2025-40168"].status is Status.FIXED
    # our module built without the siblings' fixes says so, and how to get one with them
    assert ours["CVE-2025-40139"].status is Status.AFFECTED
    assert "--fix all" in (ours["CVE-2025-40139"].action or "")
    # only the CVE our module fixed points Debian's image at it
    assert ours["CVE-2025-40168"].purl in (image["CVE-2025-40168"].action or "")
    assert ours["CVE-2025-40168"].purl not in (image["CVE-2025-40139"].action or "")
    # the sibling's fix is not in the series' default: the workaround asks for every fix
    assert "verify --kernel 6.12.107+deb12-amd64 --fix all" in (image["CVE-2025-40139"].action
                                                               or "")
    assert "--fix all" not in (image["CVE-2025-40168"].action or "")


def test_per_fix_json_reads_back_and_is_judged_again(tmp_path: Path) -> None:
    """The report's per-fix lists are in the schema (conftest validates the file) and
    report --merge judges them again; a module report without them (older) still reads."""
    path = tmp_path / "r.json"
    jsonreport.write_json(path, jsonreport.document([per_fix_report()]))
    data = json.loads(path.read_text())
    [target] = data["targets"]
    assert [f["verdict"] for f in target["after"]["fixes"]][:1] == ["fixed"]
    target["after"]["fixes"][0]["verdict"] = "vulnerable"  # an edited report is caught
    again = TargetReport.from_json(target)
    assert not again.ok and "after-module is vulnerable for CVE-2025-40168" in again.problems
    for side in ("before", "after", "shipped"):
        del target[side]["fixes"]
    assert TargetReport.from_json(target).ok  # older report: the one verdict decides


def test_junit_one_case_per_fix(tmp_path: Path) -> None:
    suite = junit.verify_suite([per_fix_report()])
    names = [case.name for case in suite]
    assert "after-module fixed: CVE-2025-40168" in names
    assert "Debian's module: CVE-2025-40139" in names
    scan = [case.name for case in junit.scan_suite([per_fix_row()])]
    assert "linux-image-6.12.107+deb12-amd64 6.12.107-1~deb12u1: CVE-2025-40149" in scan


def test_the_summary_has_a_compact_line_per_fix() -> None:
    from rich.console import Console

    from smcpatch.outputs import terminal

    console = Console(width=80, record=True, color_system=None)
    terminal.print_summary([per_fix_report()], console)
    text = console.export_text()
    assert ("per fix 6.12.107-1~deb12u1 amd64: Debian's module CVE-2025-40168 vulnerable, "
            "CVE-2025-40064 vulnerable") in text.replace("\n", " ")
    assert "our module CVE-2025-40168 fixed" in text.replace("\n", " ")
