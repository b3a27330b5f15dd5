"""JUnit XML (junitparser) for CI systems: one test case per target and check (verify), per
image (scan) and per measured mode (bench), so Jenkins, GitLab and GitHub show them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar
from xml.etree import ElementTree

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from ..cve import CVE
from ..guest.latency import BenchResult
from ..pipeline.report import TargetReport
from ..pipeline.scan import ScanRow
from ..plumbing.files import write_output
from .text import xml_safe

Result = TypeVar("Result", Error, Failure, Skipped)


# Every string goes into the tree through these: a report's, an image's or the matrix's fields
# may hold characters XML 1.0 forbids (outputs.text), which lxml refuses or the file would break.
def _case(name: str, classname: str, time: float | None = None) -> TestCase:
    return TestCase(xml_safe(name), classname=xml_safe(classname), time=time)


def _result(kind: type[Result], message: str) -> Result:
    return kind(xml_safe(message))


def verify_suite(reports: list[TargetReport], fail_on_vulnerable: bool = False) -> TestSuite:
    """One case per target and check; and per target a case for what machines run: Debian's
    module not fixed fails with fail_on_vulnerable, else it is skipped with the finding (shown,
    never silently green)."""
    suite = TestSuite("smcpatch verify")
    for report in reports:
        classname = _classname("verify", f"{report.package_version} {report.flavour}")
        seconds = report.timings.get("total", 0.0)
        checks = report.checks()
        for n, check in enumerate(checks):
            case = _case(check.name, classname, seconds if n == 0 else 0.0)
            if not check.passed:
                case.result = [_result(Error, check.message) if check.name == "completed"
                               else _result(Failure, check.message)]
            suite.add_testcase(case)
        shipped = _case("what machines run is fixed", classname)
        if report.shipped_state != "fixed":
            finding = (f"finding: {report.answer} ({CVE}); machines running {report.release} "
                       "are exposed")
            shipped.result = [_result(Failure, finding) if fail_on_vulnerable
                              else _result(Skipped, finding)]
        suite.add_testcase(shipped)
        for label, verdict in report.shipped_fixes():  # and per fix, the same way
            case = _case(f"Debian's module: {label}", classname)
            if verdict != "fixed":
                finding = f"finding: Debian's module is {verdict} for {label}"
                case.result = [_result(Failure, finding) if fail_on_vulnerable
                               else _result(Skipped, finding)]
            suite.add_testcase(case)
    return suite


def _classname(task: str, text: str) -> str:
    """CI tools (Jenkins, GitLab) split a classname on its dots into package and class: the task
    is the package, the kernel (its dots and spaces made underscores) the class."""
    return f"{task}.{re.sub(r'[^A-Za-z0-9+~-]', '_', text)}"


def scan_suite(rows: list[ScanRow]) -> TestSuite:
    """An image whose smc.ko is vulnerable fails; one that could not be judged is an error; a
    changelog that contradicts the binary fails too."""
    suite = TestSuite("smcpatch scan")
    for row in rows:
        case = _case(f"{row.package} {row.version}", _classname("scan", f"{row.suite} {row.arch}"))
        case.system_out = xml_safe(f"{row.verdict}: {row.evidence}; changelog {row.changelog}")
        if row.error is not None:
            case.result = [_result(Error, row.error)]
        elif row.verdict == "vulnerable":
            case.result = [_result(Failure, f"vulnerable to CVE-2025-40168: {row.evidence}")]
        elif row.verdict == "unknown":
            case.result = [_result(Error, f"undecided: {row.evidence}")]
        elif row.changelog == "disagree":
            case.result = [_result(Failure, f"Debian's changelog names the fix in "
                                   f"{row.changelog_fixed_in}, the binary is {row.verdict}")]
        suite.add_testcase(case)
        for fix in row.fixes:  # one case per fix judged in the image (smc.ko's, tls.ko's)
            label = fix.get("cve") or fix.get("fix")
            per_fix = _case(f"{row.package} {row.version}: {label}", case.classname)
            if fix.get("verdict") == "vulnerable":
                per_fix.result = [_result(Failure, f"{fix.get('module')}.ko vulnerable to {label}")]
            elif fix.get("verdict") != "fixed":
                per_fix.result = [_result(Error, f"{label}: {fix.get('verdict')}")]
            suite.add_testcase(per_fix)
    return suite


def bench_suite(result: BenchResult, threshold: float) -> TestSuite:
    """One case per mode and candidate: fails on a significant regression beyond threshold
    (the same rule as `inv bench --check`)."""
    suite = TestSuite("smcpatch bench")
    for s in result.stats:
        case = _case(f"{s.mode} {s.variant}/before", _classname("bench", result.release))
        case.system_out = (f"ratio {s.ratio:.3f} [95% CI {s.ci_low:.3f}, {s.ci_high:.3f}]")
        if s.ratio > 1 + threshold and s.ci_low > 1.0:
            case.result = [_result(Failure, f"{s.variant} is {s.ratio - 1:+.1%} slower than "
                                   f"before (threshold {threshold:.0%}, CI above 1)")]
        suite.add_testcase(case)
    return suite


def write(path: Path, *suites: TestSuite) -> None:
    """Through the one output writer, like the JSON files."""
    xml = JUnitXml("smcpatch")
    for suite in suites:
        suite.update_statistics()  # type: ignore[no-untyped-call]
        xml.add_testsuite(suite)
    text = ElementTree.tostring(xml._elem, encoding="unicode")
    write_output(path, '<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n")

