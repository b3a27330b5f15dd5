"""Relocations: the one reader of REL/RELA tables (decoded with :mod:`struct` straight from
the in-memory image; pyelftools' per-entry parsing is too slow for whole modules), applying them
to the DWARF, and what each one points to (a symbol, a string, a place inside an object).

:class:`RelocationReader` is the part of :class:`~smcpatch.inspection.elf.ElfObject` that does
this; the object's sections, symbols and machine come from the view itself.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import InspectError
from .machines import Machine
from .records import (
    SHF_MERGE,
    SHF_STRINGS,
    SHN_LORESERVE,
    SHT_NOBITS,
    SHT_REL,
    SHT_RELA,
    STT_SECTION,
    Reloc,
    Section,
    Symbol,
    Target,
    make_reloc,
)

_FIELD = {1: "B", 2: "H", 4: "I", 8: "Q"}


class RelocationReader:
    """The relocation methods of an ELF view (mixed into ElfObject, which sets these)."""

    data: bytes
    label: str
    machine: Machine
    sections: list[Section]
    symtab: Section | None
    symbols: list[Symbol]
    _rela_entry: struct.Struct
    _rel_entry: struct.Struct
    _relocs: dict[int, list[Reloc]] | None

    if TYPE_CHECKING:  # ElfObject's own

        def section_bytes(self, sec: Section) -> bytes: ...

        def symbol_at(self, shndx: int, offset: int) -> Symbol | None: ...

    def relocations(self, shndx: int) -> list[Reloc]:
        """All relocations applying to section ``shndx``, checked and sorted by offset (cached)."""
        if self._relocs is None:
            self._relocs = {}
        cached = self._relocs.get(shndx)
        if cached is None:
            cached = self.read_relocations(shndx)
            cached.sort(key=_reloc_offset)
            self._relocs[shndx] = cached
        return cached

    def read_relocations(
        self, shndx: int, lo: int = 0, hi: int | None = None, *, checked: bool = True
    ) -> list[Reloc]:
        """The relocation reader: the entries of the REL/RELA tables (linked to our symbol
        table) that apply to section ``shndx``, in table order.

        ``hi``: only entries with ``lo <= offset < hi``, found by binary search, which assumes
        each table is sorted by offset as as/ld write them (a caller reading a window must have
        a fallback).  ``checked``: a table that is not a whole number of entries, or an entry
        naming a symbol past the symbol table, raises InspectError; unchecked (the DWARF, which
        is optional evidence), such a table is skipped and entries are returned as they are.
        """
        symtab_index = self.symtab.index if self.symtab else -1
        nsyms = len(self.symbols)
        out: list[Reloc] = []
        for sec in self.sections:
            if sec.type not in (SHT_RELA, SHT_REL) or sec.info != shndx:
                continue
            if sec.link != symtab_index:
                continue
            entry = self._rela_entry if sec.type == SHT_RELA else self._rel_entry
            if sec.size % entry.size:
                if checked:
                    raise InspectError(f"{self.label}: malformed relocation section {sec.name}")
                continue
            raw = self.section_bytes(sec)
            if hi is not None:
                raw = _window(raw, entry, lo, hi)
            if entry is self._rela_entry:
                rows: Iterable[tuple[int, int, int]] = entry.iter_unpack(raw)
            else:
                rows = [(o, i, 0) for o, i in entry.iter_unpack(raw)]
            # ELF64_R_SYM / ELF64_R_TYPE; Reloc._make is tuple.__new__: no Python call per entry
            relocs = [make_reloc((off, info & 0xFFFFFFFF, info >> 32, addend))
                      for off, info, addend in rows]
            if checked:
                bad = next((r.sym for r in relocs if r.sym >= nsyms), None)
                if bad is not None:
                    raise InspectError(
                        f"{self.label}: relocation in {sec.name} refers to symbol {bad},"
                        f" symbol table has {nsyms}"
                    )
            out.extend(relocs)
        return out

    def apply_relocations(
        self, image: bytearray, target: Section, relocs: Iterable[Reloc]
    ) -> None:
        """Apply relocations to ``target`` inside ``image`` (a copy of :attr:`data`), as
        pyelftools' RelocationHandler does for DWARF: S + A, or S + A - P for a PC-relative type,
        with every section at address 0.  Only the machine's ``debug`` types are applied; an
        entry naming no symbol or patching past the section is skipped."""
        symbols = self.symbols
        nsyms = len(symbols)
        order = self.machine.byteorder
        how = {
            number: (struct.Struct(order + _FIELD[t.size]).pack_into, (1 << 8 * t.size) - 1,
                     t.pcrel, t.size)
            for number, t in self.machine.relocs.items()
            if t.debug
        }
        base, limit = target.offset, target.size
        for off, rtype, sym, addend in relocs:
            recipe = how.get(rtype)
            if recipe is None:
                continue
            pack_into, mask, pcrel, size = recipe
            if sym >= nsyms or off + size > limit:
                continue
            value = symbols[sym].value + addend
            if pcrel:
                value -= off
            pack_into(image, base + off, value & mask)

    def relocations_in(self, shndx: int, start: int, end: int) -> list[Reloc]:
        relocs = self.relocations(shndx)
        lo = bisect.bisect_left(relocs, start, key=_reloc_offset)
        hi = bisect.bisect_left(relocs, end, key=_reloc_offset)
        return relocs[lo:hi]

    # -- relocation targets -------------------------------------------------------------------
    def target(self, rel: Reloc) -> Target:
        """Where a relocation points: a named symbol, or a place in a section resolved to the
        symbol it lands in, the string there, the mergeable constant there (see :class:`Target`).

        A PC-relative field counts from its place plus the machine's ``pc_bias`` (x86's rel32
        from its end): ``call foo`` is ``foo``, not ``foo-0x4``.
        """
        sym = self.symbols[rel.sym]
        off = rel.addend + self.pc_bias(rel)
        # Assembler-local labels (.LC0 strings, .L123) count as anonymous places in a section.
        if sym.type != STT_SECTION and sym.name and not sym.name.startswith(".L"):
            return Target("symbol", sym.name, off)
        if sym.shndx == 0 or sym.shndx >= min(len(self.sections), SHN_LORESERVE):
            return Target("absolute", "", off)
        sec = self.sections[sym.shndx]
        off += sym.value
        if sec.flags & SHF_STRINGS and sec.type != SHT_NOBITS and 0 <= off < sec.size:
            raw = self.data[sec.offset + off : sec.offset + sec.size]
            end = raw.find(b"\0")
            text = raw[: end if end >= 0 else len(raw)].decode("utf-8", "replace")
            return Target("string", sec.name, off, text=text)
        there = self.symbol_at(sym.shndx, off)
        if there is not None:
            return Target("inside", there.name, off - there.value)
        if sec.flags & SHF_MERGE and sec.entsize and sec.type != SHT_NOBITS:
            const = self.data[sec.offset + off : sec.offset + off + sec.entsize]
            return Target("const", sec.name, off, data=const)
        return Target("section", sec.name, off)

    def describe(self, rel: Reloc) -> tuple[str, str | None]:
        """(display, symbol name) of a relocation's target: ``dst_release``,
        ``smc_ib_devices+0x10``, ``.rodata.str1.1:'smc: %s'``, ``.data+0x40`` (no symbol name)."""
        t = self.target(rel)
        if t.kind in ("symbol", "inside"):
            return (t.name if t.offset == 0 else f"{t.name}{t.offset:+#x}"), t.name
        if t.kind == "absolute":
            return f"<sym {rel.sym}>", None
        if t.kind == "string":
            short = t.text if len(t.text) <= 40 else t.text[:37] + "..."
            return f"{t.name}:{short!r}", None
        return f"{t.name}+{t.offset:#x}", None

    def pc_bias(self, rel: Reloc) -> int:
        rtype = self.machine.relocs.get(rel.type)
        if rtype is None or not rtype.pcrel:
            return 0
        return self.machine.pc_bias if rtype.bias is None else rtype.bias

    def reloc_size(self, rel: Reloc) -> int:
        """Bytes of the field a relocation patches (4 for a type missing from the table)."""
        rtype = self.machine.relocs.get(rel.type)
        return 4 if rtype is None else rtype.size


def _reloc_offset(rel: Reloc) -> int:
    return rel.offset


def _window(raw: bytes, entry: struct.Struct, lo: int, hi: int) -> bytes:
    """The entries of a relocation table ``raw`` whose offset is in [lo, hi) (binary search)."""
    n = len(raw) // entry.size
    first_field = struct.Struct(entry.format[:2])  # byte order + r_offset

    def offset_at(i: int) -> int:
        return int(first_field.unpack_from(raw, i * entry.size)[0])

    first = bisect.bisect_left(range(n), lo, key=offset_at)
    last = bisect.bisect_left(range(n), hi, key=offset_at)
    return raw[first * entry.size : last * entry.size]
