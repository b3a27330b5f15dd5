"""A livepatch module read and judged: is it one (`.modinfo` livepatch=Y), which klp objects and
functions it targets, and is each replacement fixed by the same verdict as smc.ko's function.

The targets are read from the klp arrays in the module's data, through their relocations, not
from symbol names: a `struct klp_func` starts with `old_name` (a pointer to the name string) then
`new_func` (a pointer to the replacement), and a `struct klp_object` with `name` then `funcs` (a
pointer to its klp_func array) in every kernel since 5.1. So two consecutive pointer slots
relocated to (a string, a function) are a klp_func; (a string, a place in data) a klp_object
whose funcs are the klp_funcs at that place up to the array's empty terminator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InspectError
from .elf import STT_FUNC, ElfObject, Reloc, guard, open_elf
from .judge import evidence_json
from .modcheck import check_modversions, check_vermagic, read_module_symvers
from .model import ModuleInfo
from .verdict import inspect_function, preemptible

POINTER = 8  # every machine we read is 64-bit
#: The functions a livepatch of ours may replace, with the module that holds them.
KNOWN = {"smc_clc_prfx_match": "smc"}


@dataclass
class Replacement:
    """One klp_func: the function replaced and the module's function that replaces it."""

    old_name: str
    new_func: str
    verdict: str = "unknown"
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class KlpObject:
    name: str  # the patched module ("" for vmlinux, a NULL name)
    funcs: list[Replacement] = field(default_factory=list)


@dataclass
class LivepatchJudgement:
    module: str
    name: str
    livepatch: bool  # .modinfo livepatch=Y
    vermagic: str | None
    objects: list[KlpObject]
    verdict: str  # fixed | vulnerable | unknown
    reasons: list[str]
    vermagic_ok: bool | None = None
    modversions_ok: bool | None = None
    modversions_mismatches: list[str] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        return [f"{o.name or 'vmlinux'}:{f.old_name}" for o in self.objects for f in o.funcs]

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module, "name": self.name, "livepatch": self.livepatch,
            "vermagic": self.vermagic, "verdict": self.verdict, "reasons": self.reasons,
            "objects": [{"name": o.name, "funcs": [
                {"old_name": f.old_name, "new_func": f.new_func, "verdict": f.verdict,
                 "reasons": f.reasons, "evidence": f.evidence} for f in o.funcs]}
                for o in self.objects],
            "vermagic_ok": self.vermagic_ok, "modversions_ok": self.modversions_ok,
            "modversions_mismatches": self.modversions_mismatches,
        }


def klp_objects(elf: ElfObject) -> list[KlpObject]:
    """The klp objects and functions the module's data describes (see the module docstring)."""
    funcs: dict[tuple[int, int], Replacement] = {}  # (section, offset) -> klp_func there
    objects: list[tuple[str, int, int]] = []  # name, section and offset of its funcs
    for sec in elf.sections:
        if not sec.name.startswith(".data") and not sec.name.startswith(".rodata"):
            continue
        relocs = {r.offset: r for r in elf.relocations(sec.index)}
        for offset, rel in relocs.items():
            nxt = relocs.get(offset + POINTER)
            first = elf.target(rel)
            if first.kind != "string" or nxt is None:
                continue
            second = elf.target(nxt)
            place = _data_place(elf, nxt)
            if second.kind in ("symbol", "inside") and _is_function(elf, nxt):
                funcs[(sec.index, offset)] = Replacement(first.text, second.name)
            elif place is not None:
                objects.append((first.text, *place))
    out = []
    for name, shndx, start in objects:
        end = _array_end(elf, shndx, start, funcs)
        out.append(KlpObject(name, [funcs[(s, o)] for s, o in sorted(funcs)
                                    if s == shndx and start <= o < end]))
    return out


def _array_end(elf: ElfObject, shndx: int, start: int,
               funcs: dict[tuple[int, int], Replacement]) -> int:
    """Where the klp_func array at `start` ends: its symbol's extent (`static struct klp_func
    funcs[]` has a sized local symbol), else up to the first gap in a run of equally spaced
    entries (a lone entry stands alone)."""
    sym = elf.symbol_at(shndx, start)
    if sym is not None and sym.value == start and sym.size:
        return start + sym.size
    offsets = sorted(o for s, o in funcs if s == shndx and o >= start)
    if len(offsets) < 2:
        return start + 1
    stride, end = offsets[1] - offsets[0], offsets[0]
    while end in offsets:
        end += stride
    return end


def _is_function(elf: ElfObject, rel: Reloc) -> bool:
    sym = elf.symbols[rel.sym]
    if sym.type == STT_FUNC:
        return True
    target = elf.target(rel)
    return target.kind == "inside" and any(
        s.name == target.name and s.type == STT_FUNC for s in elf.symbols)


def _data_place(elf: ElfObject, rel: Reloc) -> tuple[int, int] | None:
    """(section, offset) a relocation points to when that is a place in a data section."""
    sym = elf.symbols[rel.sym]
    if sym.shndx == 0 or sym.shndx >= len(elf.sections):
        return None
    if not elf.sections[sym.shndx].name.startswith((".data", ".rodata")):
        return None
    return sym.shndx, sym.value + rel.addend


def judge_livepatch(path: Path, release: str | None = None,
                    symvers: Path | None = None) -> LivepatchJudgement:
    """The livepatch read and each replacement judged by inspection.verdict; fixed only when it
    is a livepatch, targets exactly the known functions of their modules, and every replacement
    is fixed. Given the kernel: vermagic and modversions as for any module."""
    elf = open_elf(path)
    with guard(elf.label):
        modinfo = elf.modinfo()
        objects = klp_objects(elf)
    result = LivepatchJudgement(
        module=str(path), name=modinfo.get("name", path.stem),
        livepatch=modinfo.get("livepatch") == "Y", vermagic=modinfo.get("vermagic"),
        objects=objects, verdict="unknown", reasons=[])
    for obj in objects:
        for func in obj.funcs:
            info = inspect_function(path, func.new_func)
            func.verdict = info.evidence.verdict
            func.reasons = list(info.evidence.reasons)
            if _unlocked(info):
                func.verdict = "vulnerable"
                func.reasons.append(
                    "a replacement that reads the socket's dst with no RCU read lock on a"
                    " preemptible kernel reads dst->dev unprotected: vulnerable")
            func.evidence = evidence_json(info)
            if release is not None and result.vermagic_ok is None:
                result.vermagic_ok = check_vermagic(info, release)[0]
            if symvers is not None and result.modversions_ok is None:
                result.modversions_ok, result.modversions_mismatches = check_modversions(
                    info, read_module_symvers(symvers))
    result.verdict, result.reasons = _decide(result)
    return result


def _unlocked(info: ModuleInfo) -> bool:
    """The replacement takes no RCU read lock where rcu_read_lock() is a call (a preemptible
    kernel): the device it reads is protected by nothing (undecided for smc.ko's own function,
    which verdict.decide leaves to other evidence; a replacement has no other)."""
    ev = info.evidence
    return (ev.verdict == "unknown" and not ev.rcu_lock_sites and not ev.dst_ref_sites
            and preemptible(info.vermagic))


def _decide(result: LivepatchJudgement) -> tuple[str, list[str]]:
    reasons: list[str] = []
    if not result.livepatch:
        return "unknown", [f"{result.name}: .modinfo has no livepatch=Y: not a livepatch"]
    reasons.append(f"{result.name} is a livepatch (.modinfo livepatch=Y) targeting "
                   f"{', '.join(result.targets) or 'nothing'}")
    if not result.objects or not any(o.funcs for o in result.objects):
        reasons.append("no klp_object with a klp_func found in its data")
        return "unknown", reasons
    strange = [t for o in result.objects for f in o.funcs
               if KNOWN.get(f.old_name) != o.name for t in [f"{o.name}:{f.old_name}"]]
    if strange:
        reasons.append(f"it replaces {', '.join(strange)}, which this fix does not change")
        return "unknown", reasons
    verdicts = {f.verdict for o in result.objects for f in o.funcs}
    for o in result.objects:
        for f in o.funcs:
            reasons.append(f"{f.old_name} -> {f.new_func}: {f.verdict}"
                           f" ({f.reasons[-1] if f.reasons else 'no evidence'})")
    if "vulnerable" in verdicts:
        return "vulnerable", reasons
    if verdicts == {"fixed"}:
        return "fixed", reasons
    return "unknown", reasons


def is_livepatch(path: Path) -> bool:
    """Whether a module says it is a livepatch (.modinfo livepatch=Y)."""
    try:
        return open_elf(path).modinfo().get("livepatch") == "Y"
    except InspectError:
        return False
