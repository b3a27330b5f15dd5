"""The vulnerabilities smcpatch answers for: CVE-2025-40168, stated once, and every CVE of its
upstream series ("net: Fix UAF of sk_dst_get(sk)->dev"), each from its fix signature
(data/fixes/*.toml) so a VEX statement names its own CVE, fix and Debian versions."""

from __future__ import annotations

import functools
from dataclasses import dataclass

CVE = "CVE-2025-40168"
CWE = "CWE-416"
CWE_NAME = "Use After Free"
TITLE = "net/smc: smc_clc_prfx_match() use-after-free of dst->dev"
DESCRIPTION = ("net/smc: smc_clc_prfx_match() reads dst->dev outside RCU after sk_dst_get(), a "
               "use-after-free of the net_device (fixed upstream by 235f81045c00)")
UPSTREAM_FIX = ("235f81045c00 (\"smc: Use __sk_dst_get() and dst_dev_rcu() in "
                "smc_clc_prfx_match()\")")
# the first Debian version of each series whose changelog names the fix
DEBIAN_FIXED = {"6.1": "6.1.187-1", "6.12": "6.12.111-1"}


@dataclass(frozen=True)
class Vulnerability:
    """One CVE of the series: what a VEX statement about it says besides the product."""

    cve: str
    fix: str  # the upstream commit, 12 hex digits
    module: str  # the module that carries it: smc, tls
    functions: tuple[str, ...]
    title: str
    description: str
    upstream_fix: str
    debian_fixed: dict[str, str]  # series -> Debian's first fixed version
    cwe: str = CWE
    cwe_name: str = CWE_NAME


@functools.cache
def vulnerabilities() -> dict[str, Vulnerability]:
    """Every CVE of the series, CVE-2025-40168 first. A fix without a CVE id (0b0e4d51c655,
    smc_vlan_by_tcpsk) is no vulnerability a VEX statement can name: it is not here."""
    from .inspection.fixes import load_fixes  # the signatures are package data, read once

    out: dict[str, Vulnerability] = {}
    for sig in load_fixes():
        if not sig.cve:
            continue
        functions = ", ".join(f"{fn}()" for fn in sig.functions)
        out[sig.cve] = Vulnerability(
            cve=sig.cve, fix=sig.id, module=sig.module, functions=sig.functions,
            title=(TITLE if sig.cve == CVE
                   else f"net/{sig.module}: {functions} use-after-free of dst->dev"),
            description=(DESCRIPTION if sig.cve == CVE else
                         f"net/{sig.module}: {functions} reads dst->dev outside RCU after "
                         f"sk_dst_get(), a use-after-free of the net_device (fixed upstream by "
                         f"{sig.id})"),
            upstream_fix=f'{sig.id} ("{sig.title}")', debian_fixed=dict(sig.debian_fixed))
    return out


def vulnerability(cve: str) -> Vulnerability:
    """One CVE of the series by its id (a ValueError for any other)."""
    try:
        return vulnerabilities()[cve]
    except KeyError:
        raise ValueError(f"{cve} is no CVE of the series smcpatch knows") from None
