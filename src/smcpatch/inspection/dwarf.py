"""The DWARF evidence: which subroutines the compiler inlined into a function.

The fixed smc_clc_prfx_match inlines ``__sk_dst_get``/``dst_dev_rcu``, the vulnerable one
``sk_dst_get``; only DWARF says so (the relocations show calls, not inlines).  pyelftools reads
the DWARF; the relocations of the debug sections are applied here first, with the ELF reader's
relocation table (pyelftools' own relocation pass is what makes whole-module DWARF slow).
"""

from __future__ import annotations

import io
import struct
from typing import Any

from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile

from .elf import ELF_ERRORS, ElfObject, Section

#: Debug sections whose relocations matter for reading DIE names (not lines, ranges, frames).
_DWARF_NEEDED = (".debug_info", ".debug_str_offsets", ".debug_addr", ".debug_types")


def _unit_ranges(info: bytes, order: str) -> list[tuple[int, int]]:
    """(start, end) of each unit in .debug_info, from the (never relocated) unit lengths."""
    out = []
    pos = 0
    while pos + 4 <= len(info):
        (length,) = struct.unpack_from(order + "I", info, pos)
        if length == 0xFFFFFFFF:
            if pos + 12 > len(info):
                break
            (length,) = struct.unpack_from(order + "Q", info, pos + 4)
            end = pos + 12 + length
        else:
            end = pos + 4 + length
        if length == 0 or end > len(info):
            break
        out.append((pos, end))
        pos = end
    return out


def _units_naming(
    elf: ElfObject, info: Section, units: list[tuple[int, int]], suffix: str
) -> list[tuple[int, int]]:
    """Units whose first DIE has a string relocation to a name ending in ``suffix``.

    A cheap pre-selection (no abbreviation tables parsed): the compile unit's DW_AT_name is a
    strp/line_strp into .debug_str/.debug_line_str, relocated against that section."""
    wanted: set[tuple[int, int]] = set()
    needle = suffix.encode() + b"\0"
    for name in (".debug_str", ".debug_line_str"):
        sec = elf.by_name.get(name)
        if sec is None:
            continue
        raw = elf.section_bytes(sec)
        pos = raw.find(needle)
        while pos >= 0:
            start = raw.rfind(b"\0", 0, pos) + 1
            if pos == start or raw[pos - 1 : pos] == b"/":
                wanted.add((sec.index, start))
            pos = raw.find(needle, pos + 1)
    if not wanted:
        return []
    hits = []
    for unit in units:
        # The unit header and the start of its first DIE, where DW_AT_name comes early.
        window = elf.read_relocations(info.index, unit[0], unit[0] + 64, checked=False)
        for _off, _rtype, sym, addend in window:
            s = elf.symbols[sym] if sym < len(elf.symbols) else None
            if s is not None and (s.shndx, s.value + addend) in wanted:
                hits.append(unit)
                break
    return hits


def _die_name(die: DIE) -> str | None:
    """DW_AT_name of a DIE, following abstract_origin/specification links."""
    seen = 0
    cur: DIE | None = die
    while cur is not None and seen < 8:
        attr = cur.attributes.get("DW_AT_name")
        if attr is not None:
            value = attr.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        nxt = None
        for link in ("DW_AT_abstract_origin", "DW_AT_specification"):
            if link in cur.attributes:
                nxt = cur.get_DIE_from_attribute(link)
                break
        cur = nxt
        seen += 1
    return None


def inlined_subroutines(
    elf: ElfObject, function: str, source_file: str
) -> tuple[list[str] | None, str]:
    """Names of the subroutines inlined into ``function`` (recursively), and a note.

    Parsing all DWARF of a module takes seconds (pyelftools applies ~200k relocations and reads
    every unit's abbreviations), so first only the unit named ``*<source_file>`` (smc_clc.c) is
    relocated and read; all units only if the function is not found there.  Returns
    (None, why) when there is no answer.
    """
    info = elf.by_name.get(".debug_info")
    if info is None:
        return None, "no DWARF"
    units = _unit_ranges(elf.section_bytes(info), elf.machine.byteorder)
    preferred = _units_naming(elf, info, units, source_file)
    for selection in (preferred, None):
        if selection == []:
            continue
        image = bytearray(elf.data)
        if selection is None:
            elf.apply_relocations(image, info, elf.read_relocations(info.index, checked=False))
        else:
            for lo, hi in selection:
                relocs = elf.read_relocations(info.index, lo, hi, checked=False)
                elf.apply_relocations(image, info, relocs)
        for name in _DWARF_NEEDED[1:]:
            sec = elf.by_name.get(name)
            if sec is not None:
                elf.apply_relocations(image, sec, elf.read_relocations(sec.index, checked=False))
        dwarf = ELFFile(io.BytesIO(bytes(image))).get_dwarf_info(relocate_dwarf_sections=False)
        if selection is None:
            cus = list(dwarf.iter_CUs())
        else:
            cus = [dwarf.get_CU_at(lo) for lo, _hi in selection]
        names = _inlined_in(cus, function)
        if names is not None:
            return names, f"DWARF of {elf.label}"
    return None, f"DWARF of {elf.label} has no concrete {function}"


def inlined_or_note(
    elf: ElfObject, function: str, source_file: str
) -> tuple[list[str] | None, str]:
    """:func:`inlined_subroutines`, but unreadable DWARF only costs the DWARF evidence: the
    relocations (already read and checked) still decide."""
    try:
        return inlined_subroutines(elf, function, source_file)
    except ELF_ERRORS as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        return None, f"the DWARF of {elf.label} is unreadable ({detail}): relocations only"


def _inlined_in(cus: list[Any], function: str) -> list[str] | None:
    subprograms = []
    for cu in cus:
        for die in cu.get_top_DIE().iter_children():
            if die.tag != "DW_TAG_subprogram" or _die_name(die) != function:
                continue
            if "DW_AT_low_pc" in die.attributes or "DW_AT_ranges" in die.attributes:
                subprograms.append(die)
    if not subprograms:
        return None
    names: list[str] = []
    for sub in subprograms:
        stack = list(sub.iter_children())
        stack.reverse()
        while stack:
            die = stack.pop()
            if die.tag == "DW_TAG_inlined_subroutine":
                name = _die_name(die)
                if name and name not in names:
                    names.append(name)
            if die.has_children:
                children = list(die.iter_children())
                children.reverse()
                stack.extend(children)
    return names
