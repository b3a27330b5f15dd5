"""The verdict: is a fix of the series in a module?  Every fix (data/fixes, one signature
each) is judged by the same principle, in :func:`decide`; smc_clc_prfx_match and CVE-2025-40168
are the first entry, and the words below name them for the example.

- **no dst reference.**  The vulnerable code takes a reference on the socket's dst
  (``sk_dst_get`` inlined, so a call to ``dst_release`` and, from 6.12, ``rcuref_get_slowpath``)
  and reads ``dst->dev`` outside the RCU read lock.  Any relocation in the function (or its
  ``.cold``/``.part.N`` fragments) to one of the signature's ``vulnerable.references`` means
  vulnerable.
- **the RCU read lock is taken.**  The fixed code only holds the RCU read lock
  (``__rcu_read_lock``/``__rcu_read_unlock`` with CONFIG_PREEMPT_RCU=y) around
  ``__sk_dst_get``/``dst_dev_rcu``: both calls and no dst reference mean fixed.  A kernel
  without CONFIG_PREEMPT_RCU (Debian's 5.10, and its arm64/s390x 6.1) leaves no call to see:
  then the DWARF decides (rcu_read_lock/rcu_read_unlock and __sk_dst_get inlined, and no dst
  reference), and the reasons say so.  Without DWARF (a stripped module) a module whose
  vermagic names no preemption is fixed by the absence of the dst reference alone (its
  rcu_read_lock compiles to nothing there), said so; otherwise that is unknown.  (The
  vulnerable code takes the lock too, inside ``sk_dst_get``: the lock alone proves nothing,
  only the dst references separate the two.)
- **the DWARF inlines agree.**  When DWARF is available (our own builds, or a separately given
  ``smc_clc.o`` of the same build), the subroutines inlined into the function must show the
  same shape (``vulnerable.inlined`` or ``fixed.inlined``); a contradiction is unknown.

Where the compiler inlined a changed function (``inlined_into`` of the signature: tls.ko's
get_netdev_for_sock in Debian's amd64 builds), its callers are judged in its place.  A fix whose
function is in neither form is "undecided", with the reason.

The evidence comes from the relocations (:mod:`.elf`) and the DWARF (:mod:`.dwarf`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InspectError
from .dwarf import inlined_or_note
from .elf import ElfObject, Fragment, guard, open_elf
from .fixes import FixSignature, fixes_for_module, load_fixes
from .fndiff import function_signature
from .modcheck import module_info
from .model import (
    CallSite,
    FixResult,
    FunctionEvidence,
    ModuleInfo,
    Verdict,
    fix_verdict,
    worst,
)

#: The first fix's signature: CVE-2025-40168 in smc_clc_prfx_match.
PRIMARY = load_fixes()[0]
FUNCTION = PRIMARY.functions[0]
#: Its source file: the DWARF compile unit read first.
SOURCE_FILE = PRIMARY.source_file

RCU_LOCK = PRIMARY.rcu_lock
RCU_UNLOCK = PRIMARY.rcu_unlock
#: Functions whose call means the code takes or drops a reference on a dst_entry.
DST_REF = PRIMARY.vulnerable_references
#: Inlined subroutines (DWARF) that show the RCU read-side section where it leaves no call.
RCU_INLINED = PRIMARY.rcu_inlined
#: Inlined subroutines (DWARF) that show the vulnerable and the fixed shape.
DWARF_VULNERABLE = PRIMARY.vulnerable_inlined
DWARF_FIXED = PRIMARY.fixed_inlined


def inspect_module(path: Path, dwarf_object: Path | None = None) -> ModuleInfo:
    """Inspect a module (smc.ko, tls.ko, or smc_clc.o; optionally compressed) and judge every
    fix of the series it carries; ``evidence`` is its first fix's (smc_clc_prfx_match).

    ``dwarf_object``: a DWARF-carrying object of the same build (smc_clc.o), used for the
    inlined-subroutine evidence instead of parsing the (large) module's DWARF.  It is used for a
    function only if that function is identical (normalized) in both.
    """
    elf = open_elf(Path(path))
    with guard(elf.label):
        _require_symbols(elf)
        name = elf.modinfo().get("name")
        fixes = fixes_for_module(name) if name else []
        if not fixes:  # an object file (smc_clc.o) or an unnamed module: the fixes it holds
            fixes = [f for f in load_fixes() if any(_scopes(elf, f, fn) for fn in f.functions)]
        if not fixes or not any(_scopes(elf, fixes[0], fn) for fn in fixes[0].functions):
            first = fixes[0] if fixes else PRIMARY
            raise InspectError(f"{elf.label} does not contain {first.functions[0]}:"
                               f" not {first.module}.ko?")
        dobj = open_elf(Path(dwarf_object)) if dwarf_object else None
        results = [_judge_fix(elf, sig, dobj) for sig in fixes]
        return module_info(elf, Path(path), _primary_evidence(results[0]), results)


def inspect_function(path: Path, function: str) -> ModuleInfo:
    """One function judged by the first fix's principle (the sibling functions our patches
    change, e.g. smc_pnet_find_*_resource), without the per-fix list."""
    elf = open_elf(Path(path))
    with guard(elf.label):
        _require_symbols(elf)
        fragments = elf.function_fragments(function)
        if not fragments or all(f.symbol.name != function for f in fragments):
            raise InspectError(f"{elf.label} does not contain {function}: not smc.ko?")
        evidence = _judge_scope(elf, PRIMARY, function, fragments, None)
        return module_info(elf, Path(path), evidence, [])


def judge_fixes(path: Path) -> list[FixResult]:
    """Only the per-fix verdicts of a module (what verify, scan and host can report)."""
    return inspect_module(path).fixes


def decide(
    function: str, sites: Sites, inlined: list[str] | None, vermagic: str | None = None,
    sig: FixSignature = PRIMARY,
) -> tuple[Verdict, list[str]]:
    """The verdict on ``function`` from its call sites and the names DWARF says were inlined
    into it (None: no DWARF), with the reasons, in order, for the report.  ``vermagic`` (a
    module's) says whether the kernel is preemptible, hence whether rcu_read_lock is a call.
    ``sig``: the fix judged (its references and inlines; CVE-2025-40168 by default)."""
    reasons: list[str] = []
    dst_names = sorted({s.target for s in sites.dst})
    if sites.dst:
        reasons.append(
            f"{function} references {', '.join(dst_names)} (at {_where(sites.dst)}): it takes"
            f" and drops a dst reference (sk_dst_get + dst_release), the pattern"
            f" {sig.label} replaces"
        )
    else:
        reasons.append(
            f"{function} references no dst refcount function"
            f" ({', '.join(sorted(sig.vulnerable_references))})"
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
    fixed_names = "/".join(sorted(sig.fixed_inlined))
    vuln_names = "/".join(sorted(sig.vulnerable_inlined))
    if inlined is None:
        reasons.append("no DWARF for the function: relocations only")
    elif not inlined:
        reasons.append("DWARF lists no inlined subroutines in the function: relocations only")
        inlined = None
    else:
        dwarf_vuln = bool(sig.vulnerable_inlined & set(inlined))
        dwarf_fixed = bool(sig.fixed_inlined & set(inlined))
        shown = sorted((sig.vulnerable_inlined | sig.fixed_inlined) & set(inlined))
        reasons.append(
            f"DWARF: inlined {', '.join(shown)}" if shown
            else f"DWARF: neither {vuln_names} nor {fixed_names} inlined"
        )

    if sites.dst:
        if inlined is not None and dwarf_fixed and not dwarf_vuln:
            reasons.append("contradiction: relocations show a dst reference, DWARF the fixed code")
            return "unknown", reasons
        reasons.append(
            f"this shape reads dst->dev outside the RCU read lock ({sig.label}): vulnerable"
        )
        return "vulnerable", reasons
    if inlined is not None and dwarf_vuln:
        reasons.append(
            f"contradiction: DWARF shows {vuln_names} inlined but no dst reference is taken"
        )
        return "unknown", reasons
    if not sites.lock:
        if inlined is not None and dwarf_fixed and set(inlined) >= sig.rcu_inlined:
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
        reasons.append(f"DWARF does not show {fixed_names}: unexpected shape")
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


def collect_sites(elf: ElfObject, fragments: list[Fragment], sig: FixSignature = PRIMARY) -> Sites:
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
            if base in sig.rcu_lock:
                sites.lock.append(CallSite(site.fragment, site.offset, symname))
            elif base in sig.rcu_unlock:
                sites.unlock.append(CallSite(site.fragment, site.offset, symname))
            elif base in sig.vulnerable_references:
                sites.dst.append(CallSite(site.fragment, site.offset, symname))
    return sites


def _where(sites: list[CallSite]) -> str:
    return ", ".join(f"{s.fragment}+{s.offset:#x}" for s in sites)


def _require_symbols(elf: ElfObject) -> None:
    if elf.symtab is None:
        raise InspectError(f"{elf.label}: has no symbol table (fully stripped?): cannot inspect")


def _scopes(elf: ElfObject, sig: FixSignature, function: str) -> list[tuple[str, list[Fragment]]]:
    """Where ``function``'s code is: its own symbol (and its .cold/.part/.isra pieces), else
    each caller the signature names that is present (the compiler inlined it there)."""
    own = elf.function_fragments(function)
    if own:
        return [(function, own)]
    out = []
    for caller in sig.inlined_into.get(function, ()):
        frags = elf.function_fragments(caller)
        if frags:
            out.append((caller, frags))
    return out


def _judge_fix(elf: ElfObject, sig: FixSignature, dobj: ElfObject | None) -> FixResult:
    """Every function the fix changes, judged where its code is; the worst verdict wins."""
    verdicts: list[str] = []
    reasons: list[str] = []
    evidence: list[FunctionEvidence] = []
    for function in sig.functions:
        scopes = _scopes(elf, sig, function)
        if not scopes:
            callers = sig.inlined_into.get(function, ())
            where = f" nor its callers {', '.join(callers)}" if callers else ""
            reasons.append(f"{function}: not in the module ({elf.label} defines neither it"
                           f"{where}): this binary cannot show whether {sig.label} is in it")
            verdicts.append("unknown")
            continue
        for scope, fragments in scopes:
            ev = _judge_scope(elf, sig, scope, fragments, dobj)
            if scope != function:
                ev.reasons.insert(0, f"{function} is inlined (no symbol of its own):"
                                     f" its code is judged in its caller {scope}")
            evidence.append(ev)
            verdicts.append(ev.verdict)
            reasons.append(f"{scope}: {_summary(ev)}: {ev.reasons[-1]}")
    return FixResult(fix=sig.id, cve=sig.cve or None, module=sig.module,
                     functions=list(sig.functions), verdict=fix_verdict(worst(verdicts)),
                     reasons=reasons, title=sig.title, evidence=evidence)


def _summary(ev: FunctionEvidence) -> str:
    """The deciding evidence of one place, in a few words."""
    dst = sorted({s.target for s in ev.dst_ref_sites})
    words = [f"references {', '.join(dst)}" if dst else "no dst reference",
             f"__rcu_read_lock x{len(ev.rcu_lock_sites)}" if ev.rcu_lock_sites
             else "no __rcu_read_lock call"]
    if ev.dwarf_inlined is not None:
        words.append("DWARF read")
    return ", ".join(words)


def _judge_scope(elf: ElfObject, sig: FixSignature, function: str, fragments: list[Fragment],
                 dobj: ElfObject | None) -> FunctionEvidence:
    sites = collect_sites(elf, fragments, sig)
    extra: list[str] = []
    inlined: list[str] | None = None
    if dobj is not None:
        with guard(dobj.label):
            mine = function_signature(elf, function)
            theirs = function_signature(dobj, function)
            if theirs is None:
                extra.append(f"{dobj.label} does not contain {function}: its DWARF is unused")
            elif mine != theirs:
                extra.append(
                    f"{function} in {dobj.label} differs from the module's: its DWARF"
                    " describes another build and is unused"
                )
            else:
                inlined, note = inlined_or_note(dobj, function, sig.source_file)
                if inlined is None:
                    extra.append(note)
    elif elf.has_dwarf:
        inlined, note = inlined_or_note(elf, function, sig.source_file)
        if inlined is None:
            extra.append(note)
    verdict, reasons = decide(function, sites, inlined, elf.modinfo().get("vermagic"), sig)
    return FunctionEvidence(
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


def _primary_evidence(first: FixResult) -> FunctionEvidence:
    """The top-level evidence: the first fix's first place judged; when the fix was judged in
    more than one place (inlined into two callers) its verdict and reasons are the fix's."""
    ev = first.evidence[0]
    if len(first.evidence) == 1 and first.verdict == fix_verdict(ev.verdict):
        return ev
    verdict: Verdict = "unknown" if first.verdict == "undecided" else first.verdict
    return FunctionEvidence(ev.function, dict(ev.fragments), list(ev.calls),
                            list(ev.rcu_lock_sites), list(ev.rcu_unlock_sites),
                            list(ev.dst_ref_sites), ev.dwarf_inlined, verdict,
                            list(first.reasons))


