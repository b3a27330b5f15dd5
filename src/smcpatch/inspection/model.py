"""The inspection's result objects: call sites, the evidence about a function, the verdict on
each fix of the series, the module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: The verdict on the module's first fix (CVE-2025-40168 for smc.ko), as every output has it.
Verdict = Literal["fixed", "vulnerable", "unknown"]
#: The verdict on one fix: "undecided" is what the top-level verdict calls "unknown".
FixVerdict = Literal["fixed", "vulnerable", "undecided"]
#: Worst first: the order in which per-fix verdicts combine (and choose an exit code).
SEVERITY: dict[str, int] = {"vulnerable": 2, "undecided": 1, "unknown": 1, "fixed": 0}


@dataclass(frozen=True)
class CallSite:
    fragment: str  # symbol of the function fragment, e.g. "smc_clc_prfx_match.cold"
    offset: int  # offset of the relocation within that fragment
    target: str  # referenced symbol, e.g. "__rcu_read_lock"; "name+0x10" inside an object


@dataclass
class FunctionEvidence:
    function: str
    fragments: dict[str, int]
    calls: list[CallSite]
    rcu_lock_sites: list[CallSite]
    rcu_unlock_sites: list[CallSite]
    dst_ref_sites: list[CallSite]
    dwarf_inlined: list[str] | None
    verdict: Verdict
    reasons: list[str]


@dataclass
class FixResult:
    """The verdict on one fix of the series in one module, for every output that reports
    per fix (inspect now; verify, scan, host and VEX can take the same list)."""

    fix: str  # the upstream commit, 12 hex digits
    cve: str | None  # None when the fix has no CVE id
    module: str  # the module that carries the fix: "smc", "tls"
    functions: list[str]  # the functions the fix changes
    verdict: FixVerdict
    reasons: list[str]
    title: str = ""
    # each place judged: the function itself, or the callers its code was inlined into
    evidence: list[FunctionEvidence] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.cve or self.fix

    def to_json(self) -> dict[str, Any]:
        return {"fix": self.fix, "cve": self.cve, "title": self.title, "module": self.module,
                "functions": list(self.functions), "verdict": self.verdict,
                "reasons": list(self.reasons),
                "judged": [{"function": ev.function, "verdict": fix_verdict(ev.verdict),
                            "dst_reference_sites": sorted({s.target for s in ev.dst_ref_sites}),
                            "rcu_read_lock_calls": len(ev.rcu_lock_sites),
                            "dwarf_inlined": ev.dwarf_inlined} for ev in self.evidence]}


def fix_verdict(verdict: str) -> FixVerdict:
    """A top-level verdict in the per-fix words ("unknown" is "undecided")."""
    return "undecided" if verdict == "unknown" else verdict  # type: ignore[return-value]


def worst(verdicts: list[str]) -> str:
    """The worst of some verdicts (vulnerable, then undecided/unknown, then fixed)."""
    return max(verdicts, key=lambda v: SEVERITY.get(v, 1), default="undecided")


@dataclass
class ModuleInfo:
    path: str
    name: str
    vermagic: str | None
    srcversion: str | None
    has_dwarf: bool
    stripped: bool
    modversions: dict[str, int]
    evidence: FunctionEvidence  # the module's first fix (smc.ko: smc_clc_prfx_match)
    fixes: list[FixResult] = field(default_factory=list)
