"""outputs.openvex and outputs.junit: what scanners and CI systems read.

OpenVEX documents are checked by vexipy and the official schema (tests/vexcheck.py); the other
VEX formats, and the three agreeing, are tests/outputs/test_vex_formats.py's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from smcpatch.inspection import FixResult, fixes_for_module
from smcpatch.outputs import junit, openvex, products
from smcpatch.outputs.products import ProductStatement, VexDocument
from smcpatch.pipeline.report import TargetReport
from smcpatch.pipeline.scan import ScanRow
from tests.pipeline.test_report import _module, _report
from tests.vexcheck import openvex_problems, openvex_schema

TIME = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def openvex_of(statements: list[ProductStatement]) -> dict[str, Any]:
    return openvex.build(VexDocument.of(statements, TIME))


def _row(verdict: str, changelog: str = "silent", **extra: Any) -> ScanRow:
    row = ScanRow(package="linux-image-6.1.0-50-amd64", version="6.1.176-1", suite="bookworm",
                  arch="amd64", flavour="amd64", release="6.1.0-50-amd64",
                  deb_sha256="ab" * 32, verdict=verdict, evidence="calls dst_release",
                  reasons=["the last reason"], changelog=changelog,
                  module_path="lib/modules/6.1.0-50-amd64/kernel/net/smc/smc.ko",
                  module_sha256="cd" * 32)
    for key, value in extra.items():
        setattr(row, key, value)
    return row


def fixes_json(verdicts: dict[str, str], module: str = "smc") -> list[dict[str, Any]]:
    """Per-fix verdicts of one module as the inspector writes them (FixResult.to_json), by CVE
    or commit (a fix not named: fixed)."""
    return [FixResult(fix=sig.id, cve=sig.cve or None, module=sig.module,
                      functions=list(sig.functions),
                      verdict=verdicts.get(sig.label, "fixed"),  # type: ignore[arg-type]
                      reasons=[f"{sig.functions[0]}: {verdicts.get(sig.label, 'fixed')}"],
                      title=sig.title).to_json()
            for sig in fixes_for_module(module)]


def per_fix_row(**extra: Any) -> ScanRow:
    """A 6.12 image judged per fix: smc.ko's four fixes (CVE-2025-40064 undecided, the others
    vulnerable), and tls.ko's CVE-2025-40149 fixed."""
    smc = fixes_json({"CVE-2025-40168": "vulnerable", "CVE-2025-40139": "vulnerable",
                      "CVE-2025-40064": "undecided", "0b0e4d51c655": "vulnerable"})
    return _row("vulnerable", **{
        "package": "linux-image-6.12.107+deb12-amd64", "version": "6.12.107-1~deb12u1",
        "release": "6.12.107+deb12-amd64",
        "module_path": "lib/modules/6.12.107+deb12-amd64/kernel/net/smc/smc.ko.xz",
        "fixes": smc + fixes_json({}, "tls"),
        "tls_module_path": "lib/modules/6.12.107+deb12-amd64/kernel/net/tls/tls.ko.xz",
        "tls_module_sha256": "7e" * 32, **extra})


ROWS = [
    _row("vulnerable"),
    _row("fixed", "agree", version="6.1.192-2~x+1", changelog_fixed_in="6.1.187-1"),
    _row("not_affected", version="7.2.13-1", module_path="", module_sha256=""),
    _row("unknown", version="6.1.999-1"),
    _row("vulnerable", version="6.1.998-1", error="download failed"),
]


def test_scan_statements_one_per_product_and_valid() -> None:
    document = openvex_of(products.from_scan(ROWS))
    statements = {s["status"]: s for s in document["statements"]}  # ordered by purl
    assert len(document["statements"]) == 4 and set(statements) == {
        "affected", "fixed", "not_affected", "under_investigation"}  # the error: none
    affected, fixed, absent = (statements[k] for k in ("affected", "fixed", "not_affected"))
    product = affected["products"][0]
    assert product["@id"] == "pkg:deb/debian/linux-image-6.1.0-50-amd64@6.1.176-1?arch=amd64"
    assert product["hashes"] == {"sha-256": "ab" * 32}
    assert product["subcomponents"][0]["hashes"] == {"sha-256": "cd" * 32}
    assert product["subcomponents"][0]["@id"].endswith("#lib/modules/6.1.0-50-amd64/kernel/"
                                                       "net/smc/smc.ko")
    assert "calls dst_release" in affected["status_notes"]
    assert "6.1.187-1 or later" in affected["action_statement"]  # Debian's fix of the series
    assert "smcpatch dkms --kernel 6.1.0-50-amd64 --out DIR" in affected["action_statement"]
    assert "@6.1.192-2~x%2B1?" in fixed["products"][0]["@id"]  # "+" percent-encoded
    assert "6.1.187-1" in fixed["status_notes"] and "action_statement" not in fixed
    assert absent["justification"] == "component_not_present"
    assert "impact_statement" not in absent  # the schema allows one of the two, not both
    assert not openvex_problems(document)
    assert document["@context"] == "https://openvex.dev/ns/v0.2.0"
    again = openvex_of(products.from_scan(list(reversed(ROWS))))
    assert again["@id"] == document["@id"]  # same facts, same id, whatever the order
    assert again["statements"] == document["statements"]


def test_an_invalid_document_is_refused() -> None:
    """The validators can fail: an affected statement without its action statement."""
    document = openvex_of(products.from_scan(ROWS[:1]))
    del document["statements"][0]["action_statement"]
    problems = openvex_problems(document)
    assert any("vexipy" in p and "action" in p for p in problems), problems
    if openvex_schema() is not None:
        assert any(p.startswith("schema: 'action_statement'") for p in problems), problems


def _target_report(modules: Path | None = None, **changes: Any) -> TargetReport:
    """test_report's verified 6.1.176 target, with Debian's (vulnerable) module judged too;
    given a directory, its modules are real files there (the VEX names them by SHA256)."""
    report = _report(**{"shipped": _module("vulnerable"), **changes})
    report.image_package, report.image_sha256 = "linux-image-6.1.0-50-amd64", "ef" * 32
    if modules is not None:
        for side in ("shipped", "after"):
            module = getattr(report, side)
            module.path = str(modules / f"{side}-smc.ko")
            Path(module.path).write_bytes(f"{side} module".encode())
    return report


def per_fix_report(modules: Path | None = None, **changes: Any) -> TargetReport:
    """6.12.107 verified with CVE-2025-40168's fix alone: every module judged per fix (our
    after-module fixed in that one, vulnerable in the others; Debian's vulnerable in all)."""
    vulnerable = {label: "vulnerable" for label in ("CVE-2025-40168", "CVE-2025-40139",
                                                    "CVE-2025-40064", "0b0e4d51c655")}
    before, after, shipped = _module("vulnerable"), _module("fixed"), _module("vulnerable")
    before.fixes, shipped.fixes = fixes_json(vulnerable), fixes_json(vulnerable)
    after.fixes = fixes_json({**vulnerable, "CVE-2025-40168": "fixed"})
    chosen = [{"id": "CVE-2025-40168", "state": "vulnerable", "variant": "main",
               "functions": "smc_clc_prfx_match", "detail": ""}]
    report = _report("6.12.107", **{"before": before, "after": after, "shipped": shipped,
                                    "fixes": chosen, **changes})
    report.image_package, report.image_sha256 = "linux-image-6.12.107+deb12-amd64", "e1" * 32
    if modules is not None:
        for side in ("shipped", "after"):
            module = getattr(report, side)
            module.path = str(modules / f"{side}-6.12-smc.ko")
            Path(module.path).write_bytes(f"{side} 6.12 module".encode())
    return report


def test_verify_statements_debians_image_and_our_module(tmp_path: Path) -> None:
    document = openvex_of(products.from_verify([_target_report(tmp_path)]))
    image, ours = document["statements"]
    assert (image["status"], ours["status"]) == ("affected", "fixed")
    assert image["products"][0]["@id"] == (
        "pkg:deb/debian/linux-image-6.1.0-50-amd64@6.1.176-1?arch=amd64")
    assert image["products"][0]["hashes"] == {"sha-256": "ef" * 32}  # the image's, from fetch
    assert ours["products"][0]["@id"] == "pkg:generic/smcpatch/smc.ko@6.1.0-50-amd64?arch=amd64"
    assert ours["products"][0]["@id"] in image["action_statement"]  # the verified workaround
    assert not openvex_problems(document)
    failed = products.from_verify([_target_report(tmp_path, vermagic_ok=False)])
    assert [s.status for s in failed] == ["affected"]  # a module that failed a check: none


def test_junit_verify_one_case_per_check(tmp_path: Path) -> None:
    path = tmp_path / "j.xml"
    junit.write(path, junit.verify_suite([_target_report(), _target_report(vermagic_ok=False)]))
    xml = JUnitXml.fromfile(str(path))
    [suite] = list(xml)
    cases = list(suite)
    # every check, and per target what machines run (Debian's module: a finding, skipped)
    assert suite.tests == len(cases) == 2 * (len(_target_report().checks()) + 1)
    assert suite.failures == 1
    failed = [c for c in cases if c.result and not c.is_skipped]
    assert failed[0].name == "vermagic" and "vermagic mismatch" in failed[0].result[0].message
    findings = [c for c in cases if c.is_skipped]
    assert len(findings) == 2 and "finding: Debian's module: vulnerable" in \
        findings[0].result[0].message
    assert all(c.classname.startswith("verify.6_1_176-1") for c in cases)
    strict = junit.verify_suite([_target_report()], fail_on_vulnerable=True)
    strict.update_statistics()
    assert strict.failures == 1


def test_junit_scan_fails_vulnerable_images(tmp_path: Path) -> None:
    path = tmp_path / "s.xml"
    junit.write(path, junit.scan_suite(ROWS))
    [suite] = list(JUnitXml.fromfile(str(path)))
    assert (suite.tests, suite.failures, suite.errors) == (5, 1, 2)


def test_the_official_schema_refuses_what_it_should() -> None:
    """Says visibly (a skip) when no copy of the official schema is at hand; with one, checks
    it can fail: a not_affected statement with both a justification and an impact statement."""
    schema = openvex_schema()
    if schema is None:
        pytest.skip("no copy of the official OpenVEX 0.2.0 JSON schema: set "
                    "SMCPATCH_OPENVEX_SCHEMA (vexipy still validated the documents)")
    import jsonschema

    document = openvex_of(products.from_scan([ROWS[2]]))
    document["statements"][0]["impact_statement"] = "no smc.ko"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document))


@pytest.mark.parametrize("width", [80, 200])
def test_tables_read_at_any_width(width: int) -> None:
    """Every verdict whole at 80 and 200 columns: a table when it fits, else one block per row;
    never a squeezed or cut verdict."""
    from rich.console import Console

    from smcpatch.outputs import terminal

    console = Console(width=width, record=True, color_system=None)
    reports = [_target_report(), _target_report(vermagic_ok=False)]
    terminal.print_summary(reports, console)
    scan = type("Scan", (), {"rows": ROWS, "suites": ("bookworm",), "seconds": 1.0,
                             "downloaded_bytes": 0})()
    terminal.print_scan(scan, console)
    text = console.export_text()
    assert "…" not in text
    for line in text.splitlines():  # tables fit; prose is plain lines a terminal wraps itself
        if any(c in line for c in "│┃┏┡└") or line.startswith("  "):
            assert len(line) <= width, line
    for word in ("vulnerable", "verified", "NOT verified", "vermagic NO", "fixed"):
        assert word in text, word
    assert "linux-image-6.1.0-50-amd64" in text
