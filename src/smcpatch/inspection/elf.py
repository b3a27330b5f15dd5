"""Reading the ELF object: the in-memory view of a module (sections, symbols, function
fragments such as ``name.cold``/``name.part.N``, ``.modinfo``), built from the bytes
:mod:`.loading` gives.

Only 64-bit relocatable objects (kernel modules and ``.o`` files) of a machine in
:data:`~.machines.MACHINES` are accepted: x86-64, AArch64 (little-endian) and S/390 (s390x,
big-endian).  The pieces, each in its module:

- :mod:`.loading`: reading and decompressing (.ko.xz/.zst/.gz), :func:`guard`;
- :mod:`.machines`: the machines and what their relocation types patch;
- :mod:`.records`: sections, symbols, relocations, targets, fragments, ELF constants;
- :mod:`.relocs`: the relocation reader and relocation targets (mixed into :class:`ElfObject`);
- here: :class:`ElfObject` (headers, sections, symbols, fragments, modinfo) and
  :func:`open_elf`.  The names of the other four are re-exported, so ``from .elf import ...``
  keeps working.

pyelftools validates the headers.  Every failure reaches the caller as
:class:`~smcpatch.errors.InspectError` (see :func:`guard`).
"""

from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from elftools.elf.elffile import ELFFile

from ..errors import InspectError
from .loading import (
    ELF_ERRORS,
    MAX_ELF_SIZE,
    MAX_INPUT_SIZE,
    ZstdMissing,
    guard,
    load_elf_bytes,
)
from .machines import (
    ENDIAN,
    ETYPES,
    MACHINE_NAMES,
    MACHINES,
    Machine,
    RelocType,
    machine_of,
    supported,
)
from .records import (
    ET_REL,
    SHN_LORESERVE,
    SHT_NOBITS,
    SHT_REL,
    SHT_RELA,
    SHT_SYMTAB,
    STT_FILE,
    STT_FUNC,
    STT_SECTION,
    Fragment,
    Reloc,
    Section,
    Symbol,
    Target,
    TargetKind,
)
from .relocs import RelocationReader

__all__ = [
    "ELF_ERRORS",
    "MACHINES",
    "MAX_ELF_SIZE",
    "MAX_INPUT_SIZE",
    "STT_FUNC",
    "ElfObject",
    "Fragment",
    "Machine",
    "Reloc",
    "RelocType",
    "Section",
    "Symbol",
    "Target",
    "TargetKind",
    "ZstdMissing",
    "guard",
    "load_elf_bytes",
    "machine_of",
    "open_elf",
]


class ElfObject(RelocationReader):
    """A 64-bit ELF relocatable object of a machine in :data:`MACHINES`, held in memory."""

    def __init__(self, data: bytes, label: str) -> None:
        self.data = data
        self.label = label
        self.machine = self._validate_header()
        order = self.machine.byteorder
        self._sym_entry = struct.Struct(order + "IBBHQQ")
        self._rela_entry = struct.Struct(order + "QQq")
        self._rel_entry = struct.Struct(order + "QQ")
        self.elf = ELFFile(io.BytesIO(data))
        self.sections = [self._section(i, s) for i, s in enumerate(self.elf.iter_sections())]
        for sec in self.sections:
            if sec.type != SHT_NOBITS and sec.offset + sec.size > len(data):
                raise InspectError(
                    f"{label}: truncated: section {sec.name or sec.index} ends at byte"
                    f" {sec.offset + sec.size}, file has {len(data)}"
                )
        self.by_name = {s.name: s for s in self.sections}
        symtabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        self.symtab = symtabs[0] if symtabs else None
        self.symbols = self._read_symbols() if self.symtab else []
        self._relocs: dict[int, list[Reloc]] | None = None
        self._by_section: dict[int, tuple[list[int], list[Symbol]]] | None = None
        self._starts: dict[int, dict[int, str]] | None = None

    # -- headers ------------------------------------------------------------------------------
    def _validate_header(self) -> Machine:
        data, label = self.data, self.label
        if len(data) < 4 or data[:4] != b"\x7fELF":
            raise InspectError(f"{label}: not an ELF file (no ELF magic at its start)")
        if len(data) < 64:
            raise InspectError(f"{label}: truncated: {len(data)} bytes, shorter than an ELF header")
        if data[4] != 2:
            raise InspectError(f"{label}: 32-bit ELF; expected a 64-bit {supported()} object")
        order: Literal["<", ">"] = "<" if data[5] == 1 else ">"
        e_type, e_machine = struct.unpack_from(order + "HH", data, 16)
        machine = MACHINES.get(e_machine)
        if machine is None or machine.byteorder != order:
            # A header of the other byte order naming one of ours: say which order was expected.
            other: Literal["<", ">"] = ">" if order == "<" else "<"
            (swapped,) = struct.unpack_from(other + "H", data, 18)
            meant = MACHINES.get(swapped)
            if machine is None and meant is not None and meant.byteorder == other:
                raise InspectError(
                    f"{label}: {ENDIAN[order]} ELF; expected a {ENDIAN[other]}"
                    f" {meant.name} object"
                )
            if machine is not None:
                what = f"{machine.name} in {ENDIAN[order]} byte order"
            else:
                what = MACHINE_NAMES.get(e_machine, f"machine {e_machine}")
            raise InspectError(f"{label}: ELF for {what}; expected {supported()}")
        if e_type != ET_REL:
            what = ETYPES.get(e_type, f"type {e_type}")
            raise InspectError(
                f"{label}: ELF {what}; expected a relocatable object (kernel module or .o)"
            )
        (e_shoff,) = struct.unpack_from(order + "Q", data, 40)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from(order + "HHH", data, 58)
        if e_shoff == 0 or e_shnum == 0:
            raise InspectError(f"{label}: ELF without section headers")
        if e_shentsize != 64:
            raise InspectError(f"{label}: bad section header size {e_shentsize}")
        end = e_shoff + e_shnum * e_shentsize
        if end > len(data):
            raise InspectError(
                f"{label}: truncated: section headers end at byte {end}, file has {len(data)}"
            )
        if e_shstrndx >= e_shnum:
            raise InspectError(f"{label}: bad section name table index {e_shstrndx}")
        return machine

    @staticmethod
    def _section(index: int, s: Any) -> Section:
        h = s.header
        return Section(
            index=index,
            name=s.name,
            type=_sh_type(h["sh_type"]),
            flags=int(h["sh_flags"]),
            offset=int(h["sh_offset"]),
            size=int(h["sh_size"]),
            link=int(h["sh_link"]),
            info=int(h["sh_info"]),
            entsize=int(h["sh_entsize"]),
        )

    def section_bytes(self, sec: Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return b""
        return self.data[sec.offset : sec.offset + sec.size]

    # -- symbols ------------------------------------------------------------------------------
    def _read_symbols(self) -> list[Symbol]:
        assert self.symtab is not None
        if self.symtab.entsize not in (0, 24) or self.symtab.size % 24:
            raise InspectError(f"{self.label}: malformed symbol table")
        if self.symtab.link >= len(self.sections):
            raise InspectError(f"{self.label}: symbol table has no string table")
        strtab = self.section_bytes(self.sections[self.symtab.link])
        out = []
        raw = self.section_bytes(self.symtab)
        for i, (st_name, st_info, _other, st_shndx, st_value, st_size) in enumerate(
            self._sym_entry.iter_unpack(raw)
        ):
            end = strtab.find(b"\0", st_name)
            name = strtab[st_name : end if end >= 0 else len(strtab)].decode("utf-8", "replace")
            out.append(Symbol(i, name, st_value, st_size, st_info & 0xF, st_info >> 4, st_shndx))
        return out

    def _symbols_by_section(self) -> dict[int, tuple[list[int], list[Symbol]]]:
        """Named, sized symbols of each section sorted by address (for address lookups)."""
        if self._by_section is None:
            groups: dict[int, list[Symbol]] = {}
            for sym in self.symbols:
                if sym.type in (STT_SECTION, STT_FILE) or not sym.name:
                    continue
                if sym.name.startswith(".L"):
                    continue
                if sym.shndx == 0 or sym.shndx >= SHN_LORESERVE:
                    continue
                groups.setdefault(sym.shndx, []).append(sym)
            self._by_section = {}
            for shndx, syms in groups.items():
                # Prefer sized symbols and functions/objects over labels at the same address.
                syms.sort(key=lambda s: (s.value, s.size == 0, s.bind == 0, s.name))
                self._by_section[shndx] = ([s.value for s in syms], syms)
        return self._by_section

    def symbol_at(self, shndx: int, offset: int) -> Symbol | None:
        """The symbol of section ``shndx`` whose extent covers ``offset`` (or starts there)."""
        entry = self._symbols_by_section().get(shndx)
        if entry is None:
            return None
        values, syms = entry
        i = bisect.bisect_right(values, offset) - 1
        # Walk back over same-address or enclosing candidates (a few at most).
        best: Symbol | None = None
        steps = 0
        while i >= 0:
            sym = syms[i]
            if sym.value == offset and best is None:
                best = sym
            if sym.value <= offset < sym.value + sym.size:
                return sym
            steps += 1
            if steps > 16:  # symbols do not overlap: the cover, if any, is just before
                break
            i -= 1
        return best

    # -- functions ----------------------------------------------------------------------------
    def fragment(self, sym: Symbol) -> Fragment | None:
        if sym.shndx == 0 or sym.shndx >= min(len(self.sections), SHN_LORESERVE):
            return None
        sec = self.sections[sym.shndx]
        size = sym.size
        if size == 0:  # assembler label without .size: extend to the next symbol
            values, _ = self._symbols_by_section().get(sym.shndx, ([], []))
            i = bisect.bisect_right(values, sym.value)
            size = (values[i] if i < len(values) else sec.size) - sym.value
        start, end = sym.value, sym.value + size
        if end > sec.size or start > end:
            raise InspectError(
                f"{self.label}: symbol {sym.name} ({start:#x}+{size:#x}) lies outside"
                f" section {sec.name} ({sec.size:#x} bytes)"
            )
        return Fragment(sym, sec, start, end)

    def unique_fragments(self, accept: Callable[[str], bool]) -> Iterator[Fragment]:
        """The code of each distinct FUNC symbol whose name `accept`s (aliases counted once)."""
        seen: set[tuple[str, int, int]] = set()
        for sym in self.symbols:
            if sym.type != STT_FUNC or not accept(sym.name):
                continue
            key = (sym.name, sym.shndx, sym.value)
            if key in seen:
                continue
            seen.add(key)
            frag = self.fragment(sym)
            if frag is not None:
                yield frag

    def function_fragments(self, function: str) -> list[Fragment]:
        """The function's own symbol and its compiler-made fragments (name.cold, name.part.0)."""
        out = list(self.unique_fragments(
            lambda name: name == function or name.startswith(function + ".")))
        out.sort(key=lambda f: (f.symbol.name != function, f.symbol.name))
        return out

    def function_starts(self, shndx: int) -> dict[int, str]:
        """Offset -> name of the FUNC symbols of section ``shndx`` (the first name at an
        offset), cached."""
        if self._starts is None:
            self._starts = {}
        starts = self._starts.get(shndx)
        if starts is None:
            starts = {}
            for sym in self.symbols:
                if sym.type == STT_FUNC and sym.shndx == shndx and sym.name:
                    starts.setdefault(sym.value, sym.name)
            self._starts[shndx] = starts
        return starts

    # -- misc sections -------------------------------------------------------------------------
    def modinfo(self) -> dict[str, str]:
        """The ``key=value`` strings of .modinfo (the first value of a repeated key)."""
        sec = self.by_name.get(".modinfo")
        if sec is None:
            return {}
        out: dict[str, str] = {}
        for item in self.section_bytes(sec).split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep and key:
                out.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        return out

    @property
    def has_dwarf(self) -> bool:
        return ".debug_info" in self.by_name

    @property
    def stripped(self) -> bool:
        return not any(s.name.startswith(".debug_") for s in self.sections)


def _sh_type(value: Any) -> int:
    """pyelftools gives section types as names; map the few we need back to numbers."""
    if isinstance(value, int):
        return value
    return {
        "SHT_SYMTAB": SHT_SYMTAB,
        "SHT_RELA": SHT_RELA,
        "SHT_NOBITS": SHT_NOBITS,
        "SHT_REL": SHT_REL,
    }.get(str(value), -1)


def open_elf(path: Path) -> ElfObject:
    """Load (and decompress) ``path`` and read it as an ELF object; InspectError otherwise."""
    label = str(path)
    data = load_elf_bytes(path)
    with guard(label):
        return ElfObject(data, label)
