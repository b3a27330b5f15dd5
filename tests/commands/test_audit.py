"""`smcpatch audit` as a user meets it, over small trees the tests write (tests/pipeline/
test_audit.py has their C): one line per site, the JSON (judged by its schema in conftest), the
exit codes, bad input refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcpatch.commands import audit as audit_cmd
from smcpatch.data import COCCI_DIR
from smcpatch.errors import BadInput
from smcpatch.kernels.request import KernelRequest
from smcpatch.pipeline import audit
from tests.pipeline.test_audit import EXPECTED, GENERAL, call_line, fixed_tree, vulnerable_tree
from tests.pipeline.test_audit import spatch as spatch  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]


def smcpatch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "smcpatch", "audit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def audit_result() -> audit_cmd.AuditResult:
    """A result made in-process without spatch (the schema test's document)."""
    rules = audit.load_rules(general=True)
    site = audit.Site(rule="CVE-2025-40168", file="net/smc/smc_clc.c", line=636, column=25,
                      function="smc_clc_prfx_match", known=True, fix=rules[3].fix)
    candidate = audit.Site(rule="sk_dst_get-dev", file="net/smc/smc_clc.c", line=636,
                           column=25, function="smc_clc_prfx_match", known=False,
                           fix=rules[-1].fix, also=("CVE-2025-40168",))
    runs = [audit.RuleRun(rule=r, files=list(r.files), seconds=0.4) for r in rules]
    runs[3].sites, runs[-1].sites = [site], [candidate]
    runs[2].files, runs[2].missing_functions = [], ["get_netdev_for_sock"]
    return audit_cmd.AuditResult(tree=Path("/src/linux"), origin="extracted", kernel="6.1.176-1",
                                 source_package="linux-source-6.1", spatch="1.1.1", runs=runs,
                                 timings={"fetch": 22.7, "spatch": 3.2}, notes=["a note"])


def test_the_result_says_what_was_found_in_one_line_each() -> None:
    result = audit_result()
    assert result.exit_code == 1 and [s.rule for s in result.known_sites] == ["CVE-2025-40168"]
    assert result.site_lines() == [
        "net/smc/smc_clc.c:636: smc_clc_prfx_match(): CVE-2025-40168 (fix 235f81045c00)",
        "net/smc/smc_clc.c:636: smc_clc_prfx_match(): candidate (sk_dst_get-dev; also "
        "CVE-2025-40168)"]
    assert result.summary().startswith("VULNERABLE: 1 known vulnerable site(s) in kernel "
                                       "6.1.176-1 (CVE-2025-40168)")
    assert "CVE-2025-40149: absent, 0 site(s) (none of net/tls/tls_device.c; not defined there: "\
           "get_netdev_for_sock)" in result.rule_lines()
    result.runs[3].sites = []
    assert result.exit_code == 0  # a candidate alone is not a verdict
    assert result.summary().startswith("no known vulnerable site in kernel 6.1.176-1")


@pytest.mark.parametrize(("request_", "text"), [
    (audit_cmd.AuditRequest(), "give --kernel K or --source DIR"),
    (audit_cmd.AuditRequest(kernels=KernelRequest(kernels=("6.1.176",)), source=Path("/")),
     "give --kernel K or --source DIR"),
    (audit_cmd.AuditRequest(kernels=KernelRequest(kernels=("6.1.176", "6.1.192"))),
     "give one --kernel"),
    (audit_cmd.AuditRequest(kernels=KernelRequest(kernels=("all",))), "give one --kernel"),
    (audit_cmd.AuditRequest(kernels=KernelRequest(kernels=("6.1.176",), arches=("all",))),
     "at most one --arch"),
])
def test_a_request_that_cannot_be_is_refused(request_: audit_cmd.AuditRequest,
                                             text: str) -> None:
    with pytest.raises(BadInput, match=text):
        audit_cmd.check_request(request_)


def test_a_vulnerable_tree_is_one_line_per_site_and_exit_1(spatch: str, tmp_path: Path) -> None:
    tree = vulnerable_tree(tmp_path / "linux")
    out = tmp_path / "a.json"
    proc = smcpatch("--source", str(tree), "--json", str(out))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    for rule_id, sites in EXPECTED.items():
        for file, function in sites:
            line = call_line(tree, file, function)
            assert any(ln.startswith(f"{file}:{line}: {function}(): {rule_id} (fix ")
                       for ln in lines), (rule_id, function, proc.stdout)
    assert lines[-2].startswith("VULNERABLE: 6 known vulnerable site(s) in ")
    assert lines[-1] == f"JSON: {out}"
    document = json.loads(out.read_text())  # its schema: conftest's autouse check
    assert document["exit_code"] == 1 and document["origin"] == "given"
    assert document["tree"] == str(tree.resolve()) and document["kernel"] is None
    assert {(s["file"], s["line"]) for s in document["sites"]} == {
        (file, call_line(tree, file, fn)) for sites in EXPECTED.values() for file, fn in sites}
    assert [r["state"] for r in document["rules"]] == ["vulnerable"] * 5
    assert document["spatch_version"] == audit.spatch_version() != "unknown"


def test_a_fixed_tree_is_exit_0(spatch: str, tmp_path: Path) -> None:
    tree = fixed_tree(tmp_path / "linux")
    proc = smcpatch("--source", str(tree), "--general", "--json", str(tmp_path / "a.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2].startswith(f"no known vulnerable site in {tree}")
    assert "sk_dst_get-dev: absent, 0 site(s) (0 file(s) naming sk_dst_get)" in proc.stdout


def test_the_general_rules_candidates_are_listed_but_do_not_fail(
        spatch: str, tmp_path: Path) -> None:
    from tests.pipeline.test_audit import write_tree

    tree = write_tree(fixed_tree(tmp_path / "linux"), GENERAL)
    proc = smcpatch("--source", str(tree), "--general")
    assert proc.returncode == 0, proc.stderr
    assert ("net/ipv4/tcp_fastopen.c:5: tcp_fastopen_active_disable_ofo_check(): candidate "
            "(sk_dst_get-dev)") in proc.stdout.splitlines()
    assert "3 candidate site(s) of the general rule" in proc.stdout
    plain = smcpatch("--source", str(tree))  # without --general: the fixes' rules only
    assert plain.returncode == 0 and "candidate" not in plain.stdout


@pytest.mark.parametrize(("args", "text"), [
    ((), "audit reads one tree: give --kernel K or --source DIR"),
    (("--source", "/nonexistent/linux"), "--source /nonexistent/linux: not a directory"),
    (("--source", "/"), "none of the files the rules read is there"),
    (("--source", "/", "--suite", "bookworm"), "--suite and --matrix choose a Debian kernel"),
    (("--kernel", "6.1.176", "--source", "/"), "give --kernel K or --source DIR"),
    (("--kernel", "not a kernel"), "not a kernel"),
    (("--source", "/", "--timeout", "0"), "--timeout 0"),
    (("--source", "/", "--json", "/"), "--json /: is a directory"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(args: tuple[str, ...],
                                                           text: str) -> None:
    proc = smcpatch(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and text in proc.stderr, proc.stderr


def test_the_rules_ship_as_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"cocci/*.cocci", "cocci/general/*.cocci"' in text
    assert COCCI_DIR == ROOT / "src" / "smcpatch" / "data" / "cocci"
