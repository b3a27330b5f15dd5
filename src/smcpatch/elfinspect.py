"""The inspect stage: read smc.ko (or smc_clc.o) and decide whether smc_clc_prfx_match is fixed.

The evidence is the relocations inside the function and its compiler-split fragments
(``.cold``, ``.part.N``, ...): the vulnerable code takes a dst reference (``sk_dst_get`` inlined,
so a call to ``dst_release`` and, from 6.12, ``rcuref_get_slowpath``); the fixed code only holds
the RCU read lock (``__rcu_read_lock``/``__rcu_read_unlock`` with CONFIG_PREEMPT_RCU=y) around
``__sk_dst_get``/``dst_dev_rcu``.  When DWARF is available (our own builds, or a separately given
``smc_clc.o``), the inlined subroutines of the function must agree.

Also here: vermagic and modversions checks against the target kernel, and a kpatch-like
function comparison (``function_bodies``/``changed_functions``/``same_function``) that
neutralises relocated bytes and compares the *targets* of the relocations instead, so that
functions that merely moved compare equal.

Only x86-64 relocatable ELF objects are accepted (kernel modules and ``.o`` files).  Symbol and
relocation tables are decoded with :mod:`struct` straight from the in-memory image (pyelftools'
per-entry parsing is too slow for whole modules); pyelftools validates the headers and reads
the DWARF.  Every failure reaches the caller as :class:`~smcpatch.errors.InspectError`.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import lzma
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError
from elftools.construct import ConstructError
from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE, ENUM_RELOC_TYPE_x64

from smcpatch.errors import InspectError, ToolMissing

__all__ = [
    "CallSite",
    "FunctionEvidence",
    "InspectError",
    "ModuleInfo",
    "Verdict",
    "ZstdMissing",
    "changed_functions",
    "check_modversions",
    "check_vermagic",
    "function_bodies",
    "inspect_module",
    "load_elf_bytes",
    "read_module_symvers",
    "same_function",
]

Verdict = Literal["fixed", "vulnerable", "unknown"]

FUNCTION = "smc_clc_prfx_match"
SOURCE_FILE = "smc_clc.c"

#: Refuse to decompress anything larger than this (a module is a few MiB; this guards bombs).
MAX_ELF_SIZE = 512 * 1024 * 1024

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
#: Inlined subroutines (DWARF) that show the vulnerable and the fixed shape.
DWARF_VULNERABLE = frozenset({"sk_dst_get"})
DWARF_FIXED = frozenset({"__sk_dst_get", "dst_dev_rcu"})

# ELF constants.
_ET_REL = 1
_SHT_SYMTAB = 2
_SHT_RELA = 4
_SHT_NOBITS = 8
_SHT_REL = 9
_SHF_MERGE = 0x10
_SHF_STRINGS = 0x20
_STT_OBJECT = 1
_STT_FUNC = 2
_STT_SECTION = 3
_STT_FILE = 4
_SHN_LORESERVE = 0xFF00


# --------------------------------------------------------------------------------------------
# Machines and their relocation types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelocType:
    name: str  # as in the psABI and pyelftools' enums, e.g. "R_X86_64_PLT32"
    size: int  # bytes of the field the relocation patches
    pcrel: bool  # the field holds S + A - P (relative to the place)
    debug: bool  # applied when relocating the DWARF sections (S + A, or S + A - P)


@dataclass(frozen=True)
class Machine:
    """What the inspector needs to know about an ELF machine (``e_machine``)."""

    name: str  # in messages: "ELF for AArch64; expected x86-64"
    byteorder: Literal["<", ">"]  # struct prefix of the object's fields
    pc_bias: int  # added to a PC-relative addend to get the target's offset (rel32: 4)
    relocs: Mapping[int, RelocType]  # relocation type number -> what it patches


def _reloc_table(
    numbers: Mapping[str, Any], rows: Iterable[tuple[str, int, bool, bool]]
) -> dict[int, RelocType]:
    """{type number: RelocType} from rows (name, size, pc-relative, debug) named as in
    pyelftools' ``ENUM_RELOC_TYPE_*`` (``numbers``)."""
    return {
        int(numbers[name]): RelocType(name, size, pcrel, debug)
        for name, size, pcrel, debug in rows
    }


#: x86-64 types that pyelftools 0.33's ENUM_RELOC_TYPE_x64 lacks (psABI numbers).
_X86_64_MISSING = {"R_X86_64_SIZE32": 32, "R_X86_64_SIZE64": 33, "R_X86_64_GOTPCRELX": 41}

#: The relocation types whose patched field is known, by machine.  An unknown type counts as a
#: 4-byte field in a function body and is never applied to DWARF.  The ``debug`` column is
#: pyelftools' RelocationHandler recipes for the machine (what DWARF sections use).  Another
#: machine is one more entry, e.g. AArch64 (little-endian, pc_bias 0) from
#: ENUM_RELOC_TYPE_AARCH64: R_AARCH64_ABS64 (8, debug), R_AARCH64_ABS32 (4, debug),
#: R_AARCH64_PREL32 (4, pc-relative, debug), R_AARCH64_CALL26/JUMP26 (4, pc-relative); or
#: S/390 (big-endian ">") from ENUM_RELOC_TYPE_S390X: R_390_64 (8, debug), R_390_32 (4, debug),
#: R_390_PC32 (4, pc-relative, debug), R_390_PLT32DBL (4, pc-relative).
MACHINES: dict[int, Machine] = {
    ENUM_E_MACHINE["EM_X86_64"]: Machine(
        name="x86-64",
        byteorder="<",
        pc_bias=4,  # a rel32 is relative to the end of its 4-byte field
        relocs=_reloc_table(
            {**_X86_64_MISSING, **ENUM_RELOC_TYPE_x64},
            [
                # name                  size  pc-relative  debug
                ("R_X86_64_NONE", 0, False, False),
                ("R_X86_64_64", 8, False, True),
                ("R_X86_64_PC32", 4, True, True),
                ("R_X86_64_GOT32", 4, False, False),
                ("R_X86_64_PLT32", 4, True, False),
                ("R_X86_64_GOTPCREL", 4, True, False),
                ("R_X86_64_32", 4, False, True),
                ("R_X86_64_32S", 4, False, True),
                ("R_X86_64_16", 2, False, False),
                ("R_X86_64_PC16", 2, True, False),
                ("R_X86_64_8", 1, False, False),
                ("R_X86_64_PC8", 1, True, False),
                ("R_X86_64_PC64", 8, True, False),
                ("R_X86_64_GOTOFF64", 8, False, False),
                ("R_X86_64_GOTPC32", 4, True, False),
                ("R_X86_64_SIZE32", 4, False, False),
                ("R_X86_64_SIZE64", 8, False, False),
                ("R_X86_64_GOTPCRELX", 4, True, False),
                ("R_X86_64_REX_GOTPCRELX", 4, True, False),
            ],
        ),
    ),
}

#: Names of machines we do not read, for the error message.
_MACHINE_NAMES = {
    3: "i386", 40: "ARM", 183: "AArch64", 243: "RISC-V", 22: "S/390", 21: "PowerPC64"
}
_ETYPES = {0: "ET_NONE", 2: "ET_EXEC (an executable)", 3: "ET_DYN (a shared object)", 4: "ET_CORE"}
_FIELD = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _supported() -> str:
    return " or ".join(m.name for m in MACHINES.values())


_ELF_ERRORS: tuple[type[BaseException], ...] = (
    ELFError,
    ELFParseError,
    DWARFError,
    ConstructError,
    struct.error,
    KeyError,
    IndexError,
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    AssertionError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
)


class ZstdMissing(InspectError, ToolMissing):
    """A .ko.zst was given but neither the zstd command nor the zstandard module is available."""


# --------------------------------------------------------------------------------------------
# Result objects
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZ_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextlib.contextmanager
def _guard(label: str) -> Iterator[None]:
    """Turn any parsing failure into a one-line InspectError naming the file."""
    try:
        yield
    except InspectError:
        raise
    except MemoryError as exc:
        raise InspectError(f"{label}: out of memory while parsing") from exc
    except OSError as exc:
        raise InspectError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    except _ELF_ERRORS as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InspectError(f"{label}: malformed or truncated ELF: {detail}") from exc


def _decompress_zstd(raw: bytes, label: str) -> bytes:
    exe = shutil.which("zstd")
    if exe is not None:
        proc = subprocess.run(
            [exe, "-dc", "-q"], input=raw, capture_output=True, check=False
        )
        if proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise InspectError(f"{label}: zstd failed: {msg[-1] if msg else proc.returncode}")
        return proc.stdout
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        raise ZstdMissing(
            f"{label}: is zstd-compressed but the zstd command is missing"
            " (apt-get install zstd)"
        ) from None
    try:
        dctx = zstandard.ZstdDecompressor()
        with dctx.stream_reader(io.BytesIO(raw)) as reader:
            out: bytes = reader.read(MAX_ELF_SIZE + 1)
    except zstandard.ZstdError as exc:
        raise InspectError(f"{label}: corrupt zstd data: {exc}") from exc
    return out


def _decompress(raw: bytes, label: str) -> bytes:
    if raw.startswith(_XZ_MAGIC):
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            out = dec.decompress(raw, max_length=MAX_ELF_SIZE + 1)
        except lzma.LZMAError as exc:
            raise InspectError(f"{label}: corrupt xz data: {exc}") from exc
        if not dec.eof and len(out) <= MAX_ELF_SIZE:
            raise InspectError(f"{label}: truncated xz data")
    elif raw.startswith(_GZ_MAGIC):
        gz = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = gz.decompress(raw, MAX_ELF_SIZE + 1)
        except zlib.error as exc:
            raise InspectError(f"{label}: corrupt gzip data: {exc}") from exc
        if not gz.eof and len(out) <= MAX_ELF_SIZE:
            raise InspectError(f"{label}: truncated gzip data")
    elif raw.startswith(_ZSTD_MAGIC):
        out = _decompress_zstd(raw, label)
    else:
        return raw
    if len(out) > MAX_ELF_SIZE:
        raise InspectError(f"{label}: decompresses to more than {MAX_ELF_SIZE} bytes")
    return out


def load_elf_bytes(path: Path) -> bytes:
    """The ELF image of ``path``, decompressed in memory if it is .xz/.gz/.zst (by content).

    Raises InspectError when the file cannot be read or decompressed; does not check ELF-ness.
    """
    label = str(path)
    with _guard(label):
        raw = Path(path).read_bytes()
        return _decompress(raw, label)


# --------------------------------------------------------------------------------------------
# The in-memory ELF view
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


@dataclass(frozen=True)
class _Symbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int


class _Reloc(NamedTuple):
    offset: int
    type: int  # number: what it means is the machine's (``_Elf.machine.relocs``)
    sym: int
    addend: int


@dataclass(frozen=True)
class _Fragment:
    symbol: _Symbol
    section: _Section
    start: int
    end: int


class _Elf:
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
            if sec.type != _SHT_NOBITS and sec.offset + sec.size > len(data):
                raise InspectError(
                    f"{label}: truncated: section {sec.name or sec.index} ends at byte"
                    f" {sec.offset + sec.size}, file has {len(data)}"
                )
        self.by_name = {s.name: s for s in self.sections}
        symtabs = [s for s in self.sections if s.type == _SHT_SYMTAB]
        self.symtab = symtabs[0] if symtabs else None
        self.symbols = self._read_symbols() if self.symtab else []
        self._relocs: dict[int, list[_Reloc]] | None = None
        self._by_section: dict[int, tuple[list[int], list[_Symbol]]] | None = None
        self._starts: dict[int, dict[int, str]] | None = None

    # -- headers ------------------------------------------------------------------------------
    def _validate_header(self) -> Machine:
        data, label = self.data, self.label
        if len(data) < 4 or data[:4] != b"\x7fELF":
            raise InspectError(f"{label}: not an ELF file (starts with {bytes(data[:4])!r})")
        if len(data) < 64:
            raise InspectError(f"{label}: truncated: {len(data)} bytes, shorter than an ELF header")
        if data[4] != 2:
            raise InspectError(f"{label}: 32-bit ELF; expected a 64-bit {_supported()} object")
        order = "<" if data[5] == 1 else ">"
        if all(m.byteorder != order for m in MACHINES.values()):
            raise InspectError(
                f"{label}: big-endian ELF; expected a little-endian {_supported()} object"
            )
        e_type, e_machine = struct.unpack_from(order + "HH", data, 16)
        machine = MACHINES.get(e_machine)
        if machine is None or machine.byteorder != order:
            what = _MACHINE_NAMES.get(e_machine, f"machine {e_machine}")
            raise InspectError(f"{label}: ELF for {what}; expected {_supported()}")
        if e_type != _ET_REL:
            what = _ETYPES.get(e_type, f"type {e_type}")
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
    def _section(index: int, s: Any) -> _Section:
        h = s.header
        return _Section(
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

    def section_bytes(self, sec: _Section) -> bytes:
        if sec.type == _SHT_NOBITS:
            return b""
        return self.data[sec.offset : sec.offset + sec.size]

    # -- symbols ------------------------------------------------------------------------------
    def _read_symbols(self) -> list[_Symbol]:
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
            out.append(_Symbol(i, name, st_value, st_size, st_info & 0xF, st_info >> 4, st_shndx))
        return out

    def _symbols_by_section(self) -> dict[int, tuple[list[int], list[_Symbol]]]:
        """Named, sized symbols of each section sorted by address (for address lookups)."""
        if self._by_section is None:
            groups: dict[int, list[_Symbol]] = {}
            for sym in self.symbols:
                if sym.type in (_STT_SECTION, _STT_FILE) or not sym.name:
                    continue
                if sym.name.startswith(".L"):
                    continue
                if sym.shndx == 0 or sym.shndx >= _SHN_LORESERVE:
                    continue
                groups.setdefault(sym.shndx, []).append(sym)
            self._by_section = {}
            for shndx, syms in groups.items():
                # Prefer sized symbols and functions/objects over labels at the same address.
                syms.sort(key=lambda s: (s.value, s.size == 0, s.bind == 0, s.name))
                self._by_section[shndx] = ([s.value for s in syms], syms)
        return self._by_section

    def symbol_at(self, shndx: int, offset: int) -> _Symbol | None:
        """The symbol of section ``shndx`` whose extent covers ``offset`` (or starts there)."""
        entry = self._symbols_by_section().get(shndx)
        if entry is None:
            return None
        values, syms = entry
        i = bisect.bisect_right(values, offset) - 1
        # Walk back over same-address or enclosing candidates (a few at most).
        best: _Symbol | None = None
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

    # -- relocations --------------------------------------------------------------------------
    def relocations(self, shndx: int) -> list[_Reloc]:
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
    ) -> list[_Reloc]:
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
        out: list[_Reloc] = []
        for sec in self.sections:
            if sec.type not in (_SHT_RELA, _SHT_REL) or sec.info != shndx:
                continue
            if sec.link != symtab_index:
                continue
            entry = self._rela_entry if sec.type == _SHT_RELA else self._rel_entry
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
            for off, info, addend in rows:
                sym = info >> 32
                if checked and sym >= nsyms:
                    raise InspectError(
                        f"{self.label}: relocation in {sec.name} refers to symbol {sym},"
                        f" symbol table has {nsyms}"
                    )
                out.append(_Reloc(off, info & 0xFFFFFFFF, sym, addend))
        return out

    def apply_relocations(
        self, image: bytearray, target: _Section, relocs: Iterable[_Reloc]
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

    def relocations_in(self, shndx: int, start: int, end: int) -> list[_Reloc]:
        relocs = self.relocations(shndx)
        lo = bisect.bisect_left(relocs, start, key=_reloc_offset)
        hi = bisect.bisect_left(relocs, end, key=_reloc_offset)
        return relocs[lo:hi]

    # -- functions ----------------------------------------------------------------------------
    def fragment(self, sym: _Symbol) -> _Fragment | None:
        if sym.shndx == 0 or sym.shndx >= min(len(self.sections), _SHN_LORESERVE):
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
        return _Fragment(sym, sec, start, end)

    def unique_fragments(self, accept: Callable[[str], bool]) -> Iterator[_Fragment]:
        """The code of each distinct FUNC symbol whose name `accept`s (aliases counted once)."""
        seen: set[tuple[str, int, int]] = set()
        for sym in self.symbols:
            if sym.type != _STT_FUNC or not accept(sym.name):
                continue
            key = (sym.name, sym.shndx, sym.value)
            if key in seen:
                continue
            seen.add(key)
            frag = self.fragment(sym)
            if frag is not None:
                yield frag

    def function_fragments(self, function: str) -> list[_Fragment]:
        """The function's own symbol and its compiler-made fragments (name.cold, name.part.0)."""
        out = list(self.unique_fragments(
            lambda name: name == function or name.startswith(function + ".")))
        out.sort(key=lambda f: (f.symbol.name != function, f.symbol.name))
        return out

    # -- relocation targets -------------------------------------------------------------------
    def describe_target(self, rel: _Reloc) -> tuple[str, str, str | None]:
        """(display, normalized, symbol name) for what a relocation refers to.

        ``normalized`` does not depend on where things were laid out: local-symbol numeric
        suffixes are dropped, section-relative references are resolved to the symbol they land
        in (plus the offset inside it), strings to their text, mergeable constants to their bytes.
        """
        sym = self.symbols[rel.sym]
        # Assembler-local labels (.LC0 strings, .L123) count as anonymous places in a section.
        if sym.type != _STT_SECTION and sym.name and not sym.name.startswith(".L"):
            eff = rel.addend + self._pc_bias(rel)
            display = sym.name if eff == 0 else f"{sym.name}{eff:+#x}"
            return display, f"{normalize_symbol(sym.name)}{rel.addend:+d}", sym.name
        if sym.shndx == 0 or sym.shndx >= min(len(self.sections), _SHN_LORESERVE):
            return f"<sym {rel.sym}>", f"<abs>{rel.addend:+d}", None
        sec = self.sections[sym.shndx]
        off = sym.value + rel.addend + self._pc_bias(rel)
        secnorm = normalize_symbol(sec.name)
        if sec.flags & _SHF_STRINGS and sec.type != _SHT_NOBITS and 0 <= off < sec.size:
            raw = self.data[sec.offset + off : sec.offset + sec.size]
            end = raw.find(b"\0")
            text = raw[: end if end >= 0 else len(raw)].decode("utf-8", "replace")
            short = text if len(text) <= 40 else text[:37] + "..."
            # __FILE__ strings carry the build directory: keep only the file name.
            norm = _SOURCE_PATH.sub(r".../\1", text)
            return f"{sec.name}:{short!r}", f"str:{secnorm}:{norm!r}", None
        target = self.symbol_at(sym.shndx, off)
        if target is not None:
            delta = off - target.value
            display = target.name if delta == 0 else f"{target.name}{delta:+#x}"
            return display, f"{normalize_symbol(target.name)}{delta:+d}", target.name
        if sec.flags & _SHF_MERGE and sec.entsize and sec.type != _SHT_NOBITS:
            const = self.data[sec.offset + off : sec.offset + off + sec.entsize]
            return f"{sec.name}+{off:#x}", f"const:{secnorm}:{const.hex()}", None
        return f"{sec.name}+{off:#x}", f"{secnorm}+?", None

    def _pc_bias(self, rel: _Reloc) -> int:
        rtype = self.machine.relocs.get(rel.type)
        return self.machine.pc_bias if rtype is not None and rtype.pcrel else 0

    def normalized_body(self, frag: _Fragment) -> bytes:
        """The fragment's bytes with relocated fields zeroed, plus its relocation targets.

        Calls and jumps to other functions of the same section need no relocation (the
        assembler resolved them), so their displacement changes whenever code moves: those
        are zeroed too and their target function's name goes into the signature.
        """
        code = bytearray(self.section_bytes(frag.section)[frag.start : frag.end])
        lines = []
        covered = bytearray(len(code))
        for rel in self.relocations_in(frag.section.index, frag.start, frag.end):
            pos = rel.offset - frag.start
            rtype = self.machine.relocs.get(rel.type)
            size = 4 if rtype is None else rtype.size
            code[pos : pos + size] = bytes(len(code[pos : pos + size]))
            covered[pos : pos + size] = b"\1" * len(covered[pos : pos + size])
            lines.append(f"{pos}:{rel.type}:{self.describe_target(rel)[1]}")
        for pos, field_at, target in self._local_branches(frag, code, covered):
            code[field_at : field_at + 4] = bytes(4)
            lines.append(f"{pos}:branch:{normalize_symbol(target)}")
        lines.sort(key=lambda line: int(line.split(":", 1)[0]))
        return bytes(code) + b"\0relocs\0" + "\n".join(lines).encode()

    def _function_starts(self, shndx: int) -> dict[int, str]:
        if self._starts is None:
            self._starts = {}
        starts = self._starts.get(shndx)
        if starts is None:
            starts = {}
            for sym in self.symbols:
                if sym.type == _STT_FUNC and sym.shndx == shndx and sym.name:
                    starts.setdefault(sym.value, sym.name)
            self._starts[shndx] = starts
        return starts

    def _local_branches(
        self, frag: _Fragment, code: bytearray, covered: bytearray
    ) -> Iterator[tuple[int, int, str]]:
        """(opcode position, rel32 position, target) of call/jmp/jcc rel32 instructions that
        land exactly on another function of the same section (no relocation needed there).

        Found by pattern, not by decoding: a stray opcode byte counts only if its displacement
        hits a function start outside this function, which leaves layout-independent noise at
        worst."""
        starts = self._function_starts(frag.section.index)
        n = len(code)
        candidates: list[tuple[int, int]] = []
        for opcode in (0xE8, 0xE9):
            pos = code.find(opcode)
            while pos >= 0:
                candidates.append((pos, pos + 1))
                pos = code.find(opcode, pos + 1)
        pos = code.find(0x0F)
        while pos >= 0:
            if pos + 1 < n and 0x80 <= code[pos + 1] <= 0x8F:
                candidates.append((pos, pos + 2))
            pos = code.find(0x0F, pos + 1)
        candidates.sort()
        last_end = -1
        for pos, field_at in candidates:
            if field_at + 4 > n or pos < last_end or any(covered[pos : field_at + 4]):
                continue
            (disp,) = struct.unpack_from("<i", code, field_at)
            target = frag.start + field_at + 4 + disp
            if frag.start <= target < frag.end:
                continue
            name = starts.get(target)
            if name is None:
                continue
            last_end = field_at + 4
            yield pos, field_at, name

    # -- misc sections -------------------------------------------------------------------------
    def modinfo(self) -> dict[str, str]:
        sec = self.by_name.get(".modinfo")
        if sec is None:
            return {}
        out: dict[str, str] = {}
        for item in self.section_bytes(sec).split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep and key:
                out.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        return out

    def modversions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        sec = self.by_name.get("__versions")
        if sec is not None:
            raw = self.section_bytes(sec)
            for pos in range(0, len(raw) - 63, 64):  # struct modversion_info {ulong crc; char[56]}
                (crc,) = struct.unpack_from(self.machine.byteorder + "Q", raw, pos)
                name = raw[pos + 8 : pos + 64].split(b"\0", 1)[0].decode("utf-8", "replace")
                if name:
                    out[name] = crc & 0xFFFFFFFF
        names = self.by_name.get("__version_ext_names")
        crcs = self.by_name.get("__version_ext_crcs")
        if names is not None and crcs is not None:  # CONFIG_EXTENDED_MODVERSIONS (6.13+)
            symbols = self.section_bytes(names).split(b"\0")
            raw_crcs = self.section_bytes(crcs)[: crcs.size // 4 * 4]
            values = [v for (v,) in struct.iter_unpack(self.machine.byteorder + "I", raw_crcs)]
            for name_b, crc in zip(symbols, values, strict=False):
                if name_b:
                    out.setdefault(name_b.decode("utf-8", "replace"), crc)
        return out

    @property
    def has_dwarf(self) -> bool:
        return ".debug_info" in self.by_name

    @property
    def stripped(self) -> bool:
        return not any(s.name.startswith(".debug_") for s in self.sections)


def _reloc_offset(rel: _Reloc) -> int:
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


def _sh_type(value: Any) -> int:
    """pyelftools gives section types as names; map the few we need back to numbers."""
    if isinstance(value, int):
        return value
    return {
        "SHT_SYMTAB": _SHT_SYMTAB,
        "SHT_RELA": _SHT_RELA,
        "SHT_NOBITS": _SHT_NOBITS,
        "SHT_REL": _SHT_REL,
    }.get(str(value), -1)


_NUM_SUFFIX = re.compile(r"\.\d+")
_SOURCE_PATH = re.compile(r"[^\s:\"'/]*(?:/[^\s:\"'/]+)*/([^\s:\"'/]+\.[chS])\b")
_LOCAL_LABEL = re.compile(r"^\.L[A-Za-z_]*\d+$")


def normalize_symbol(name: str) -> str:
    """Drop the layout-dependent parts of a local symbol: ``foo.constprop.0`` -> ``foo.constprop``,
    ``__key.12`` -> ``__key``, ``bar.llvm.123`` -> ``bar.llvm``, ``.LC12`` -> ``.L``."""
    if _LOCAL_LABEL.match(name):
        return ".L"
    return _NUM_SUFFIX.sub("", name)


def _open(path: Path) -> _Elf:
    label = str(path)
    data = load_elf_bytes(path)
    with _guard(label):
        return _Elf(data, label)


# --------------------------------------------------------------------------------------------
# DWARF
# --------------------------------------------------------------------------------------------


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
    elf: _Elf, info: _Section, units: list[tuple[int, int]], suffix: str
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


def _dwarf_inlined(elf: _Elf, function: str) -> tuple[list[str] | None, str]:
    """Names of the subroutines inlined into ``function`` (recursively), and a note.

    Parsing all DWARF of a module takes seconds (pyelftools applies ~200k relocations and reads
    every unit's abbreviations), so first only the unit named ``*smc_clc.c`` is relocated and
    read; all units only if the function is not found there.  Returns (None, why) when there
    is no answer.
    """
    info = elf.by_name.get(".debug_info")
    if info is None:
        return None, "no DWARF"
    units = _unit_ranges(elf.section_bytes(info), elf.machine.byteorder)
    preferred = _units_naming(elf, info, units, SOURCE_FILE)
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


def _dwarf_inlined_or_note(elf: _Elf, function: str) -> tuple[list[str] | None, str]:
    """:func:`_dwarf_inlined`, but unreadable DWARF only costs the DWARF evidence: the
    relocations (already read and checked) still decide."""
    try:
        return _dwarf_inlined(elf, function)
    except _ELF_ERRORS as exc:
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


# --------------------------------------------------------------------------------------------
# Evidence and verdict
# --------------------------------------------------------------------------------------------


@dataclass
class _Sites:
    calls: list[CallSite] = field(default_factory=list)
    lock: list[CallSite] = field(default_factory=list)
    unlock: list[CallSite] = field(default_factory=list)
    dst: list[CallSite] = field(default_factory=list)


def _collect_sites(elf: _Elf, fragments: list[_Fragment]) -> _Sites:
    sites = _Sites()
    for frag in fragments:
        for rel in elf.relocations_in(frag.section.index, frag.start, frag.end):
            display, _norm, symname = elf.describe_target(rel)
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


def _verdict(
    function: str, sites: _Sites, inlined: list[str] | None
) -> tuple[Verdict, list[str]]:
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
        return "unknown", reasons
    if not sites.unlock:
        reasons.append("the RCU read lock is never released in the function: unexpected shape")
        return "unknown", reasons
    if inlined is not None and not dwarf_fixed:
        reasons.append("DWARF does not show __sk_dst_get/dst_dev_rcu: unexpected shape")
        return "unknown", reasons
    reasons.append("the device is looked up under the RCU read lock without a dst reference: fixed")
    return "fixed", reasons


def _function_signature(elf: _Elf, function: str) -> bytes | None:
    frags = elf.function_fragments(function)
    if not frags:
        return None
    parts = []
    for frag in frags:
        name = normalize_symbol(frag.symbol.name).encode()
        parts.append(name + b"\0" + elf.normalized_body(frag))
    return b"\0fragment\0".join(parts)


def _inspect(path: Path, dwarf_object: Path | None, function: str) -> ModuleInfo:
    elf = _open(path)
    label = elf.label
    with _guard(label):
        if elf.symtab is None:
            raise InspectError(f"{label}: has no symbol table (fully stripped?): cannot inspect")
        fragments = elf.function_fragments(function)
        if not fragments or all(f.symbol.name != function for f in fragments):
            raise InspectError(f"{label} does not contain {function}: not smc.ko?")
        sites = _collect_sites(elf, fragments)
        extra: list[str] = []
        inlined: list[str] | None
        if dwarf_object is not None:
            dobj = _open(dwarf_object)
            with _guard(dobj.label):
                mine = _function_signature(elf, function)
                theirs = _function_signature(dobj, function)
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
                    inlined, note = _dwarf_inlined_or_note(dobj, function)
                    if inlined is None:
                        extra.append(note)
        elif elf.has_dwarf:
            inlined, note = _dwarf_inlined_or_note(elf, function)
            if inlined is None:
                extra.append(note)
        else:
            inlined = None
        verdict, reasons = _verdict(function, sites, inlined)
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
        modinfo = elf.modinfo()
        name = modinfo.get("name") or _stem(path)
        return ModuleInfo(
            path=str(path),
            name=name,
            vermagic=modinfo.get("vermagic"),
            srcversion=modinfo.get("srcversion"),
            has_dwarf=elf.has_dwarf,
            stripped=elf.stripped,
            modversions=elf.modversions(),
            evidence=evidence,
        )


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".xz", ".gz", ".zst"):
        name = name.removesuffix(suffix)
    for suffix in (".ko", ".o"):
        name = name.removesuffix(suffix)
    return name


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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


def check_vermagic(info: ModuleInfo, kernel_release: str) -> tuple[bool, str]:
    """Whether the module was built for ``kernel_release`` (vermagic starts with "<release> ")."""
    if info.vermagic is None:
        return False, f"{info.path} has no vermagic (not a kernel module?)"
    if info.vermagic.startswith(kernel_release + " "):
        return True, f"vermagic {info.vermagic.strip()!r} matches {kernel_release}"
    found = info.vermagic.split(" ", 1)[0]
    return False, (
        f"vermagic {info.vermagic.strip()!r} is for {found}, not {kernel_release}:"
        " the kernel would refuse the module"
    )


def read_module_symvers(path: Path) -> dict[str, int]:
    """symbol -> CRC from a kernel's Module.symvers (``0xcrc<TAB>symbol<TAB>module<TAB>...``)."""
    label = str(path)
    out: dict[str, int] = {}
    with _guard(label):
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise InspectError(f"{label}:{lineno}: not a Module.symvers line: {line[:80]!r}")
            try:
                crc = int(fields[0], 16)
            except ValueError:
                raise InspectError(f"{label}:{lineno}: bad CRC {fields[0][:20]!r}") from None
            out[fields[1]] = crc
    return out


def check_modversions(info: ModuleInfo, symvers: dict[str, int]) -> tuple[bool, list[str]]:
    """Compare the module's __versions CRCs with the kernel's Module.symvers."""
    problems: list[str] = []
    if not info.modversions:
        if any(symvers.values()):
            problems.append(
                f"{info.path} has no __versions section but the kernel exports versioned"
                " symbols (CONFIG_MODVERSIONS): build it against the kernel's headers"
            )
        return not problems, problems
    for sym, crc in sorted(info.modversions.items()):
        if sym not in symvers:
            problems.append(f"{sym}: not exported by the kernel (missing from Module.symvers)")
        elif symvers[sym] != crc:
            problems.append(
                f"{sym}: CRC {crc:#010x} in the module, {symvers[sym]:#010x} in the kernel"
            )
    return not problems, problems


def _bodies(elf: _Elf) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for frag in elf.unique_fragments(lambda name: not name.startswith(("__pfx_", "__cfi_"))):
        name = normalize_symbol(frag.symbol.name)
        if name in out:
            n = 2
            while f"{name}~{n}" in out:
                n += 1
            name = f"{name}~{n}"
        out[name] = elf.normalized_body(frag)
    return out


def function_bodies(path: Path) -> dict[str, bytes]:
    """Every defined FUNC symbol (fragments separately) -> its normalized body.

    Keys are normalized names (``foo.constprop.0`` -> ``foo.constprop``); a second function of
    the same normalized name gets ``~2``.  ``__pfx_``/``__cfi_`` padding symbols are left out.
    """
    elf = _open(Path(path))
    with _guard(elf.label):
        return _bodies(elf)


def changed_functions(before: Path, after: Path) -> list[str]:
    """Sorted names of functions whose normalized body differs, or that exist in one only."""
    return changed_between(function_bodies(before), function_bodies(after))


def changed_between(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    """changed_functions for bodies already read with function_bodies."""
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def same_function(a: Path, b: Path, function: str) -> bool | None:
    """Whether ``function`` (with its fragments) is identical in both, None if missing in either."""
    ea, eb = _open(Path(a)), _open(Path(b))
    with _guard(ea.label):
        sa = _function_signature(ea, function)
    with _guard(eb.label):
        sb = _function_signature(eb, function)
    if sa is None or sb is None:
        return None
    return sa == sb
