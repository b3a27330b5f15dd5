"""features.vex and features.junit: what security teams' tools and CI systems read.

OpenVEX documents are checked by vexipy (an OpenVEX implementation on PyPI) and, where a copy of
the official OpenVEX 0.2.0 JSON schema is at hand, by jsonschema against it: this machine reaches
neither GitHub nor openvex.dev, so the schema is looked for in $SMCPATCH_OPENVEX_SCHEMA or the
test cache's schemas/ (see docs/vex.md).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from smcpatch.outputs import junit
from smcpatch.outputs import openvex as vex
from smcpatch.pipeline.report import TargetReport
from smcpatch.pipeline.scan import ScanRow
from tests.conftest import cache_root_for_tests
from tests.pipeline.test_report import _module, _report

TIME = "2026-12-03T09:00:00Z"


def official_schema() -> dict[str, Any] | None:
    env = os.environ.get("SMCPATCH_OPENVEX_SCHEMA")
    path = Path(env) if env else (cache_root_for_tests() / "schemas"
                                  / "openvex_json_schema_0.2.0.json")
    return json.loads(path.read_text()) if path.is_file() else None


def validate(document: dict[str, Any]) -> None:
    """Raise unless both validators accept the document."""
    from vexipy import Document

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # vexipy warns about impact statements without a reason
        Document.model_validate(document)
    schema = official_schema()
    if schema is not None:
        import jsonschema

        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, errors


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


ROWS = [
    _row("vulnerable"),
    _row("fixed", "agree", version="6.1.192-2~x+1", changelog_fixed_in="6.1.187-1"),
    _row("not_affected", version="7.2.13-1", module_path="", module_sha256=""),
    _row("unknown", version="6.1.999-1"),
    _row("vulnerable", version="6.1.998-1", error="download failed"),
]


def test_scan_statements_one_per_product_and_valid() -> None:
    statements = vex.scan_statements(ROWS, TIME)
    assert [s["status"] for s in statements] == ["affected", "fixed", "not_affected",
                                                 "under_investigation"]  # the error: none
    affected, fixed, absent, _ = statements
    product = affected["products"][0]
    assert product["@id"] == "pkg:deb/debian/linux-image-6.1.0-50-amd64@6.1.176-1?arch=amd64"
    assert product["hashes"] == {"sha-256": "ab" * 32}
    assert product["subcomponents"][0]["hashes"] == {"sha-256": "cd" * 32}
    assert product["subcomponents"][0]["@id"].endswith("#lib/modules/6.1.0-50-amd64/kernel/"
                                                       "net/smc/smc.ko")
    assert "action_statement" in affected and "calls dst_release" in affected["status_notes"]
    assert "@6.1.192-2~x%2B1?" in fixed["products"][0]["@id"]  # "+" percent-encoded
    assert "6.1.187-1" in fixed["status_notes"]
    assert absent["justification"] == "component_not_present"
    assert "impact_statement" not in absent  # the schema allows one of the two, not both
    document = vex.document(statements, TIME)
    validate(document)
    assert document["@context"] == "https://openvex.dev/ns/v0.2.0"
    assert vex.document(statements, TIME)["@id"] == document["@id"]  # same facts, same id


def test_an_invalid_document_is_refused() -> None:
    """The validators can fail: an affected statement without its action statement."""
    statements = vex.scan_statements(ROWS[:1], TIME)
    del statements[0]["action_statement"]
    with pytest.raises(Exception, match="action"):
        validate(vex.document(statements, TIME))


def _target_report(**changes: Any) -> TargetReport:
    """test_report's verified 6.1.176 target, with Debian's (vulnerable) module judged too."""
    return _report(**{"shipped": _module("vulnerable"), **changes})


def test_verify_statements_debians_image_and_our_module() -> None:
    statements = vex.verify_statements([_target_report()], TIME)
    assert [s["status"] for s in statements] == ["affected", "fixed"]
    assert statements[0]["products"][0]["@id"].startswith(
        "pkg:deb/debian/linux-image-6.1.0-50-amd64@6.1.176-1?arch=amd64")
    assert statements[1]["products"][0]["@id"].startswith("pkg:generic/smcpatch/smc.ko@")
    validate(vex.document(statements, TIME))
    failed = vex.verify_statements([_target_report(vermagic_ok=False)], TIME)
    assert [s["status"] for s in failed] == ["affected"]  # a module that failed a check: none


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
    schema = official_schema()
    if schema is None:
        pytest.skip("no copy of the official OpenVEX 0.2.0 JSON schema: set "
                    "SMCPATCH_OPENVEX_SCHEMA (vexipy still validated the documents)")
    import jsonschema

    statements = vex.scan_statements([ROWS[2]], TIME)
    statements[0]["impact_statement"] = "no smc.ko"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(
        vex.document(statements, TIME)))
    assert errors
