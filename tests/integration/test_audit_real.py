"""`smcpatch audit` over real Debian kernel sources: the rules against what Debian shipped. 6.1.176
(before Debian's 6.1.187 fixed the smc family; tls already fixed in 6.1.162) has the four smc
fixes' sites; 6.1.192 has none; bullseye's 5.10.223 has the smc ones and tls's. The general
rule finds, beyond the smc sites, tcp_fastopen_active_disable_ofo_check() in 6.1.176 (fixed
upstream in the same week: "tcp: use dst_dev_rcu() in tcp_fastopen_active_disable_ofo_check()",
in Debian's 6.1.192 changelog)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import cache_root_for_tests
from tests.pipeline.test_audit import spatch as spatch  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
SMC_SITES = {  # the functions each smc fix's rule finds in a vulnerable tree
    ("CVE-2025-40168", "net/smc/smc_clc.c", "smc_clc_prfx_match"),
    ("CVE-2025-40139", "net/smc/smc_clc.c", "smc_clc_prfx_set"),
    ("CVE-2025-40064", "net/smc/smc_pnet.c", "smc_pnet_find_roce_resource"),
    ("CVE-2025-40064", "net/smc/smc_pnet.c", "smc_pnet_find_ism_resource"),
    ("smc_vlan_by_tcpsk-0b0e4d51c655", "net/smc/smc_core.c", "smc_vlan_by_tcpsk"),
}
TLS_SITE = ("CVE-2025-40149", "net/tls/tls_device.c", "get_netdev_for_sock")


def audit(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "audit.json"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "smcpatch", "audit", *args, "--json", str(out),
                           "--cache", str(cache_root_for_tests())], cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=3600, check=False)
    print(f"audit {' '.join(args)}: {time.monotonic() - started:.1f} s")  # the runtime, -s
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())  # the document: conftest checks its schema


def sites(document: dict[str, Any], known: bool = True) -> set[tuple[str, str, str]]:
    return {(s["rule"], s["file"], s["function"]) for s in document["sites"]
            if s["known"] is known}


def test_6_1_176_has_the_four_smc_fixes_sites(spatch: str, tmp_path: Path) -> None:
    proc, document = audit(tmp_path, "--kernel", "6.1.176")
    assert proc.returncode == 1 and document["vulnerable"] is True
    assert sites(document) == SMC_SITES
    assert {s[0] for s in SMC_SITES} == {"CVE-2025-40168", "CVE-2025-40139", "CVE-2025-40064",
                                         "smc_vlan_by_tcpsk-0b0e4d51c655"}
    states = {r["id"]: r["state"] for r in document["rules"]}
    assert states["CVE-2025-40149"] == "clean"  # Debian fixed tls in 6.1.162
    for s in document["sites"]:  # the line is the sk_dst_get() call, in the tree audited
        line = (Path(document["tree"]) / s["file"]).read_text().splitlines()[s["line"] - 1]
        assert "sk_dst_get(" in line and "__sk_dst_get(" not in line, line
        assert f"{s['file']}:{s['line']}: {s['function']}(): {s['rule']} (fix " in proc.stdout
    assert document["kernel"] == "6.1.176-1" and document["source_package"] == "linux-source-6.1"


def test_6_1_192_has_none(spatch: str, tmp_path: Path) -> None:
    proc, document = audit(tmp_path, "--kernel", "6.1.192")
    assert proc.returncode == 0 and document["sites"] == []
    assert {r["state"] for r in document["rules"]} == {"clean"}  # read, not absent
    assert "no known vulnerable site in kernel 6.1.192-2" in proc.stdout


def test_5_10_has_the_tls_site_and_the_smc_ones(spatch: str, tmp_path: Path) -> None:
    proc, document = audit(tmp_path, "--kernel", "5.10.223")
    assert proc.returncode == 1
    assert sites(document) == SMC_SITES | {TLS_SITE}


def test_the_general_rule_finds_the_smc_sites_and_one_more(spatch: str, tmp_path: Path) -> None:
    proc, document = audit(tmp_path, "--kernel", "6.1.176", "--general")
    assert proc.returncode == 1
    general = {(f, fn) for _, f, fn in sites(document, known=False)}
    assert general == {(f, fn) for _, f, fn in SMC_SITES} | {
        ("net/ipv4/tcp_fastopen.c", "tcp_fastopen_active_disable_ofo_check")}
    run = document["rules"][-1]
    assert run["id"] == "sk_dst_get-dev" and run["general"] and len(run["files"]) >= 9
    assert any(f.startswith("drivers/infiniband/") for f in run["files"])
    assert any(f.startswith("drivers/net/") for f in run["files"])
    _, fixed = audit(tmp_path, "--kernel", "6.1.192", "--general")
    assert fixed["sites"] == []
