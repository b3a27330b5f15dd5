"""The inspection's result objects: call sites, the evidence about a function, the module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verdict = Literal["fixed", "vulnerable", "unknown"]


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
class ModuleInfo:
    path: str
    name: str
    vermagic: str | None
    srcversion: str | None
    has_dwarf: bool
    stripped: bool
    modversions: dict[str, int]
    evidence: FunctionEvidence
