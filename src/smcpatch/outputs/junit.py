"""JUnit XML (junitparser) for CI systems: one test case per target and check (verify), per
image (scan) and per measured mode (bench), so Jenkins, GitLab and GitHub show them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from ..guest.bench import BenchResult
from ..pipeline.report import TargetReport
from ..pipeline.scan import ScanRow


def verify_suite(reports: list[TargetReport]) -> TestSuite:
    suite = TestSuite("smcpatch verify")
    for report in reports:
        classname = f"{report.package_version}.{report.flavour}"
        seconds = report.timings.get("total", 0.0)
        checks = report.checks()
        for n, check in enumerate(checks):
            case = TestCase(check.name, classname=classname,
                            time=seconds if n == 0 else 0.0)
            if not check.passed:
                case.result = [Error(check.message) if check.name == "completed"
                               else Failure(check.message)]
            suite.add_testcase(case)
    return suite


def scan_suite(rows: list[ScanRow]) -> TestSuite:
    """An image whose smc.ko is vulnerable fails; one that could not be judged is an error; a
    changelog that contradicts the binary fails too."""
    suite = TestSuite("smcpatch scan")
    for row in rows:
        case = TestCase(f"{row.package} {row.version}", classname=f"{row.suite}.{row.arch}")
        case.system_out = f"{row.verdict}: {row.evidence}; changelog {row.changelog}"
        if row.error is not None:
            case.result = [Error(row.error)]
        elif row.verdict == "vulnerable":
            case.result = [Failure(f"vulnerable to CVE-2025-40168: {row.evidence}")]
        elif row.verdict == "unknown":
            case.result = [Error(f"undecided: {row.evidence}")]
        elif row.changelog == "disagree":
            case.result = [Failure(f"Debian's changelog names the fix in "
                                   f"{row.changelog_fixed_in}, the binary is {row.verdict}")]
        suite.add_testcase(case)
    return suite


def bench_suite(result: BenchResult, threshold: float) -> TestSuite:
    """One case per mode and candidate: fails on a significant regression beyond threshold
    (the same rule as `inv bench --check`)."""
    suite = TestSuite("smcpatch bench")
    for s in result.stats:
        case = TestCase(f"{s.mode} {s.variant}/before", classname=f"bench.{result.release}")
        case.system_out = (f"ratio {s.ratio:.3f} [95% CI {s.ci_low:.3f}, {s.ci_high:.3f}]")
        if s.ratio > 1 + threshold and s.ci_low > 1.0:
            case.result = [Failure(f"{s.variant} is {s.ratio - 1:+.1%} slower than before "
                                   f"(threshold {threshold:.0%}, CI above 1)")]
        suite.add_testcase(case)
    return suite


def write(path: Path, *suites: TestSuite) -> None:
    """Write atomically, like the JSON report."""
    xml = JUnitXml("smcpatch")
    for suite in suites:
        suite.update_statistics()  # type: ignore[no-untyped-call]
        xml.add_testsuite(suite)
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        xml.write(tmp, pretty=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
