"""The verdict: is a function (smc_clc_prfx_match) fixed against CVE-2025-40168?

The principle, in :func:`decide`:

- **no dst reference.**  The vulnerable code takes a reference on the socket's dst
  (``sk_dst_get`` inlined, so a call to ``dst_release`` and, from 6.12, ``rcuref_get_slowpath``)
  and reads ``dst->dev`` outside the RCU read lock.  Any relocation in the function (or its
  ``.cold``/``.part.N`` fragments) to a :data:`DST_REF` function means vulnerable.
- **the RCU read lock is taken.**  The fixed code only holds the RCU read lock
  (``__rcu_read_lock``/``__rcu_read_unlock`` with CONFIG_PREEMPT_RCU=y) around
  ``__sk_dst_get``/``dst_dev_rcu``: both calls and no dst reference mean fixed.  A kernel
  without CONFIG_PREEMPT_RCU (Debian's 5.10, and its arm64/s390x 6.1) leaves no call to see:
  then the DWARF decides (rcu_read_lock/rcu_read_unlock and __sk_dst_get inlined, and no dst
  reference), and the reasons say so.  Without DWARF (a stripped module) a module whose
  vermagic names no preemption is fixed by the absence of the dst reference alone (its
  rcu_read_lock compiles to nothing there), said so; otherwise that is unknown.
- **the DWARF inlines agree.**  When DWARF is available (our own builds, or a separately given
  ``smc_clc.o`` of the same build), the subroutines inlined into the function must show the
  same shape (:data:`DWARF_VULNERABLE` or :data:`DWARF_FIXED`); a contradiction is unknown.

The evidence comes from the relocations (:mod:`.elf`) and the DWARF (:mod:`.dwarf`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InspectError
from .dwarf import inlined_or_note
from .elf import ElfObject, Fragment, guard, open_elf
from .fndiff import function_signature
from .modcheck import module_info
from .model import CallSite, FunctionEvidence, ModuleInfo, Verdict

FUNCTION = "smc_clc_prfx_match"
#: Its source file: the DWARF compile unit read first.
SOURCE_FILE = "smc_clc.c"

RCU_LOCK = frozenset({"__rcu_read_lock", "rcu_read_lock"})
RCU_UNLOCK = frozenset({"__rcu_read_unlock", "rcu_read_unlock"})
#: Functions whose call means the code takes or drops a reference on a dst_entry.
DST_REF = frozenset(
    {
        "dst_release",
        "dst_release_immediate",
        "dst_hold",
        "dst_hold_safe",
        "sk_dst_get",
        "rcuref_get_slowpath",
        "rcuref_put_slowpath",
    }
)
#: Inlined subroutines (DWARF) that show the RCU read-side section where it leaves no call.
RCU_INLINED = frozenset({"rcu_read_lock", "rcu_read_unlock"})
#: Inlined subroutines (DWARF) that show the vulnerable and the fixed shape.
DWARF_VULNERABLE = frozenset({"sk_dst_get"})
DWARF_FIXED = frozenset({"__sk_dst_get", "dst_dev_rcu"})


def inspect_module(path: Path, dwarf_object: Path | None = None) -> ModuleInfo:
    """Inspect smc.ko (or smc_clc.o, optionally compressed) and judge smc_clc_prfx_match.

    ``dwarf_object``: a DWARF-carrying smc_clc.o of the same build, used for the
    inlined-subroutine evidence instead of parsing the (large) module's DWARF.  It is used only
    if its smc_clc_prfx_match is identical (normalized) to the module's.
    """
    return _inspect(Path(path), Path(dwarf_object) if dwarf_object else None, FUNCTION)


def inspect_function(path: Path, function: str) -> ModuleInfo:
    """The same judgement for another function that looks a device up through a socket's dst
    (the sibling fixes: smc_clc_prfx_set, smc_pnet_find_*_resource, smc_vlan_by_tcpsk)."""
    return _inspect(Path(path), None, function)


def decide(
    function: str, sites: Sites, inlined: list[str] | None, vermagic: str | None = None
) -> tuple[Verdict, list[str]]:
    """The verdict on ``function`` from its call sites and the names DWARF says were inlined
    into it (None: no DWARF), with the reasons, in order, for the report.  ``vermagic`` (a
    module's) says whether the kernel is preemptible, hence whether rcu_read_lock is a call."""
    reasons: list[str] = []
    dst_names = sorted({s.target for s in sites.dst})
    if sites.dst:
        reasons.append(
            f"{function} references {', '.join(dst_names)} (at {_where(sites.dst)}): it takes"
            " and drops a dst reference (sk_dst_get + dst_release), the pattern"
            " CVE-2025-40168 replaces"
        )
    else:
        reasons.append(
            f"{function} references no dst refcount function ({', '.join(sorted(DST_REF))})"
        )
    if sites.lock:
        reasons.append(
            f"it calls __rcu_read_lock {len(sites.lock)}x (at {_where(sites.lock)}) and"
            f" __rcu_read_unlock {len(sites.unlock)}x"
        )
    else:
        reasons.append(
            "it never calls __rcu_read_lock (a kernel without CONFIG_PREEMPT_RCU inlines"
            " rcu_read_lock, leaving no symbol evidence)"
        )

    dwarf_vuln = dwarf_fixed = False
    if inlined is None:
        reasons.append("no DWARF for the function: relocations only")
    elif not inlined:
        reasons.append("DWARF lists no inlined subroutines in the function: relocations only")
        inlined = None
    else:
        dwarf_vuln = bool(DWARF_VULNERABLE & set(inlined))
        dwarf_fixed = bool(DWARF_FIXED & set(inlined))
        shown = sorted((DWARF_VULNERABLE | DWARF_FIXED) & set(inlined))
        reasons.append(
            f"DWARF: inlined {', '.join(shown)}" if shown
            else "DWARF: neither sk_dst_get nor __sk_dst_get/dst_dev_rcu inlined"
        )

    if sites.dst:
        if inlined is not None and dwarf_fixed and not dwarf_vuln:
            reasons.append("contradiction: relocations show a dst reference, DWARF the fixed code")
            return "unknown", reasons
        reasons.append(
            "this shape reads dst->dev outside the RCU read lock (CVE-2025-40168): vulnerable"
        )
        return "vulnerable", reasons
    if inlined is not None and dwarf_vuln:
        reasons.append(
            "contradiction: DWARF shows sk_dst_get inlined but no dst reference is taken"
        )
        return "unknown", reasons
    if not sites.lock:
        if inlined is not None and dwarf_fixed and set(inlined) >= RCU_INLINED:
            # CONFIG_PREEMPT_RCU unset (Debian's 5.10): rcu_read_lock() compiles to no call
            reasons.append(
                "no __rcu_read_lock call, as a kernel without CONFIG_PREEMPT_RCU compiles it;"
                " DWARF shows rcu_read_lock/rcu_read_unlock and __sk_dst_get inlined and no dst"
                " reference is taken: fixed (decided by the DWARF evidence)"
            )
            return "fixed", reasons
        if inlined is None and not preemptible(vermagic):
            reasons.append(
                f"the module's vermagic ({(vermagic or '').strip()!r}) names no preemption"
                " (no 'preempt'/'preempt_rt'): CONFIG_PREEMPTION and so CONFIG_PREEMPT_RCU are"
                " off, and rcu_read_lock() compiles to no code at all; with no dst reference"
                " taken: fixed (decided by the absence of the dst reference on a"
                " non-preemptible kernel; no DWARF to show the RCU section itself)"
            )
            return "fixed", reasons
        return "unknown", reasons
    if not sites.unlock:
        reasons.append("the RCU read lock is never released in the function: unexpected shape")
        return "unknown", reasons
    if inlined is not None and not dwarf_fixed:
        reasons.append("DWARF does not show __sk_dst_get/dst_dev_rcu: unexpected shape")
        return "unknown", reasons
    reasons.append("the device is looked up under the RCU read lock without a dst reference: fixed")
    return "fixed", reasons


def preemptible(vermagic: str | None) -> bool:
    """Whether a module's vermagic says its kernel is preemptible (include/linux/vermagic.h:
    "preempt " for CONFIG_PREEMPT_BUILD, "preempt_rt " for PREEMPT_RT); without a vermagic
    (an object file, not a module) nothing is known, which counts as preemptible here."""
    if vermagic is None:
        return True
    words = vermagic.split()
    return "preempt" in words or "preempt_rt" in words


@dataclass
class Sites:
    """The function's relocations, and those to the functions the verdict looks for."""

    calls: list[CallSite] = field(default_factory=list)
    lock: list[CallSite] = field(default_factory=list)
    unlock: list[CallSite] = field(default_factory=list)
    dst: list[CallSite] = field(default_factory=list)


def collect_sites(elf: ElfObject, fragments: list[Fragment]) -> Sites:
    """Every relocation in the fragments as a call site, sorted into RCU lock/unlock and dst
    reference sites by the symbol's base name (``sk_dst_get.isra.0`` counts as sk_dst_get)."""
    sites = Sites()
    for frag in fragments:
        for rel in elf.relocations_in(frag.section.index, frag.start, frag.end):
            display, symname = elf.describe(rel)
            site = CallSite(frag.symbol.name, rel.offset - frag.start, display)
            sites.calls.append(site)
            if symname is None:
                continue
            base = symname.split(".", 1)[0]  # sk_dst_get.isra.0 -> sk_dst_get
            if base in RCU_LOCK:
                sites.lock.append(CallSite(site.fragment, site.offset, symname))
            elif base in RCU_UNLOCK:
                sites.unlock.append(CallSite(site.fragment, site.offset, symname))
            elif base in DST_REF:
                sites.dst.append(CallSite(site.fragment, site.offset, symname))
    return sites


def _where(sites: list[CallSite]) -> str:
    return ", ".join(f"{s.fragment}+{s.offset:#x}" for s in sites)


def _inspect(path: Path, dwarf_object: Path | None, function: str) -> ModuleInfo:
    elf = open_elf(path)
    label = elf.label
    with guard(label):
        if elf.symtab is None:
            raise InspectError(f"{label}: has no symbol table (fully stripped?): cannot inspect")
        fragments = elf.function_fragments(function)
        if not fragments or all(f.symbol.name != function for f in fragments):
            raise InspectError(f"{label} does not contain {function}: not smc.ko?")
        sites = collect_sites(elf, fragments)
        extra: list[str] = []
        inlined: list[str] | None
        if dwarf_object is not None:
            dobj = open_elf(dwarf_object)
            with guard(dobj.label):
                mine = function_signature(elf, function)
                theirs = function_signature(dobj, function)
                if theirs is None:
                    inlined = None
                    extra.append(f"{dobj.label} does not contain {function}: its DWARF is unused")
                elif mine != theirs:
                    inlined = None
                    extra.append(
                        f"{function} in {dobj.label} differs from the module's: its DWARF"
                        " describes another build and is unused"
                    )
                else:
                    inlined, note = inlined_or_note(dobj, function, SOURCE_FILE)
                    if inlined is None:
                        extra.append(note)
        elif elf.has_dwarf:
            inlined, note = inlined_or_note(elf, function, SOURCE_FILE)
            if inlined is None:
                extra.append(note)
        else:
            inlined = None
        verdict, reasons = decide(function, sites, inlined, elf.modinfo().get("vermagic"))
        evidence = FunctionEvidence(
            function=function,
            fragments={f.symbol.name: f.end - f.start for f in fragments},
            calls=sites.calls,
            rcu_lock_sites=sites.lock,
            rcu_unlock_sites=sites.unlock,
            dst_ref_sites=sites.dst,
            dwarf_inlined=inlined,
            verdict=verdict,
            reasons=extra + reasons,
        )
        return module_info(elf, path, evidence)
