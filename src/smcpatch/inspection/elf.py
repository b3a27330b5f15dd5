"""Reading the ELF object: loading (decompressing .ko.xz/.zst/.gz), sections, symbols,
relocations, function fragments (``name.cold``, ``name.part.N``) and ``.modinfo``.

Only 64-bit relocatable objects (kernel modules and ``.o`` files) of a machine in
:data:`MACHINES` are accepted: x86-64, AArch64 (little-endian) and S/390 (s390x, big-endian).
What a machine's relocation types mean (size of the patched field, PC-relative or not, applied
to DWARF or not) is a table keyed by ``e_machine``, named as in pyelftools'
``ENUM_RELOC_TYPE_*`` and its RelocationHandler recipes: another machine is one more entry.
Symbol and relocation tables are decoded with :mod:`struct`
straight from the in-memory image (pyelftools' per-entry parsing is too slow for whole
modules); pyelftools validates the headers.  Every failure reaches the caller as
:class:`~smcpatch.errors.InspectError` (see :func:`guard`).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import lzma
import os
import shutil
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import (
    ENUM_E_MACHINE,
    ENUM_RELOC_TYPE_AARCH64,
    ENUM_RELOC_TYPE_S390X,
    ENUM_RELOC_TYPE_x64,
)

from ..errors import InspectError, ToolMissing
from ..plumbing import proc

#: Refuse to decompress anything larger than this (a module is a few MiB; this guards bombs).
MAX_ELF_SIZE = 512 * 1024 * 1024
#: A file given to the inspector is read only up to this (compressed or not).
MAX_INPUT_SIZE = 256 * 1024 * 1024

# ELF constants.
_ET_REL = 1
_SHT_SYMTAB = 2
_SHT_RELA = 4
_SHT_NOBITS = 8
_SHT_REL = 9
_SHF_MERGE = 0x10
_SHF_STRINGS = 0x20
STT_FUNC = 2
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
    bias: int | None = None  # this type's PC bias when it differs from the machine's


@dataclass(frozen=True)
class Machine:
    """What the inspector needs to know about an ELF machine (``e_machine``)."""

    name: str  # in messages: "ELF for AArch64; expected x86-64"
    byteorder: Literal["<", ">"]  # struct prefix of the object's fields
    pc_bias: int  # added to a PC-relative addend to get the target's offset (rel32: 4)
    relocs: Mapping[int, RelocType]  # relocation type number -> what it patches
    isa: Literal["x86-64", "aarch64", "s390"]  # whose branch encodings fndiff decodes
    objdump: str  # the disassembler of this machine's code (binutils, or its cross build)
    objdump_package: str


def _reloc_table(
    numbers: Mapping[str, Any],
    rows: Iterable[tuple[str, int, bool, bool] | tuple[str, int, bool, bool, int]],
) -> dict[int, RelocType]:
    """{type number: RelocType} from rows (name, size, pc-relative, debug[, PC bias]) named as
    in pyelftools' ``ENUM_RELOC_TYPE_*`` (``numbers``)."""
    out = {}
    for row in rows:
        name, size, pcrel, debug = row[:4]
        bias = row[4] if len(row) > 4 else None
        out[int(numbers[name])] = RelocType(name, size, pcrel, debug, bias)
    return out


#: x86-64 types that pyelftools 0.33's ENUM_RELOC_TYPE_x64 lacks (psABI numbers).
_X86_64_MISSING = {"R_X86_64_SIZE32": 32, "R_X86_64_SIZE64": 33, "R_X86_64_GOTPCRELX": 41}

#: AArch64 types that pyelftools 0.33's ENUM_RELOC_TYPE_AARCH64 lacks (psABI numbers).
_AARCH64_MISSING = {"R_AARCH64_LDST128_ABS_LO12_NC": 299, "R_AARCH64_PLT32": 314}

#: The relocation types whose patched field is known, by machine.  An unknown type counts as a
#: 4-byte field in a function body and is never applied to DWARF.  The ``debug`` column is
#: pyelftools' RelocationHandler recipes for the machine (what DWARF sections use).  Another
#: machine is one more entry.  AArch64's instruction relocations (CALL26, ADR_PREL_PG_HI21,
#: ADD_ABS_LO12_NC, ...) patch bits of one 4-byte instruction word: the field is that word.
#: S/390's ``DBL`` types (brasl/larl/brcl: a halfword-scaled immediate 2 bytes into a 6-byte
#: instruction) count from the instruction's start, so ``brasl foo`` carries addend 2: their PC
#: bias is -2; data PC32/PC64 (``x - .``) count from the field itself.
MACHINES: dict[int, Machine] = {
    ENUM_E_MACHINE["EM_X86_64"]: Machine(
        name="x86-64",
        byteorder="<",
        pc_bias=4,  # a rel32 is relative to the end of its 4-byte field
        relocs=_reloc_table(
            {**_X86_64_MISSING, **ENUM_RELOC_TYPE_x64},
            [
                # name                     size pcrel  debug
                ("R_X86_64_NONE",           0,  False, False),
                ("R_X86_64_64",             8,  False, True),
                ("R_X86_64_PC32",           4,  True,  True),
                ("R_X86_64_GOT32",          4,  False, False),
                ("R_X86_64_PLT32",          4,  True,  False),
                ("R_X86_64_GOTPCREL",       4,  True,  False),
                ("R_X86_64_32",             4,  False, True),
                ("R_X86_64_32S",            4,  False, True),
                ("R_X86_64_16",             2,  False, False),
                ("R_X86_64_PC16",           2,  True,  False),
                ("R_X86_64_8",              1,  False, False),
                ("R_X86_64_PC8",            1,  True,  False),
                ("R_X86_64_PC64",           8,  True,  False),
                ("R_X86_64_GOTOFF64",       8,  False, False),
                ("R_X86_64_GOTPC32",        4,  True,  False),
                ("R_X86_64_SIZE32",         4,  False, False),
                ("R_X86_64_SIZE64",         8,  False, False),
                ("R_X86_64_GOTPCRELX",      4,  True,  False),
                ("R_X86_64_REX_GOTPCRELX",  4,  True,  False),
            ],
        ),
        isa="x86-64",
        objdump="objdump",
        objdump_package="binutils",
    ),
    ENUM_E_MACHINE["EM_AARCH64"]: Machine(
        name="AArch64",
        byteorder="<",
        pc_bias=0,  # S + A - P from the place itself: "bl foo" has addend 0
        relocs=_reloc_table(
            {**_AARCH64_MISSING, **ENUM_RELOC_TYPE_AARCH64},
            [
                # name                              size pcrel  debug
                ("R_AARCH64_NONE",                   0,  False, False),
                ("R_AARCH64_ABS64",                  8,  False, True),
                ("R_AARCH64_ABS32",                  4,  False, True),
                ("R_AARCH64_ABS16",                  2,  False, False),
                ("R_AARCH64_PREL64",                 8,  True,  False),
                ("R_AARCH64_PREL32",                 4,  True,  True),
                ("R_AARCH64_PREL16",                 2,  True,  False),
                ("R_AARCH64_PLT32",                  4,  True,  False),
                ("R_AARCH64_MOVW_UABS_G0",           4,  False, False),
                ("R_AARCH64_MOVW_UABS_G0_NC",        4,  False, False),
                ("R_AARCH64_MOVW_UABS_G1",           4,  False, False),
                ("R_AARCH64_MOVW_UABS_G1_NC",        4,  False, False),
                ("R_AARCH64_MOVW_UABS_G2",           4,  False, False),
                ("R_AARCH64_MOVW_UABS_G2_NC",        4,  False, False),
                ("R_AARCH64_MOVW_UABS_G3",           4,  False, False),
                ("R_AARCH64_LD_PREL_LO19",           4,  True,  False),
                ("R_AARCH64_ADR_PREL_LO21",          4,  True,  False),
                ("R_AARCH64_ADR_PREL_PG_HI21",       4,  True,  False),
                ("R_AARCH64_ADR_PREL_PG_HI21_NC",    4,  True,  False),
                ("R_AARCH64_ADD_ABS_LO12_NC",        4,  False, False),
                ("R_AARCH64_LDST8_ABS_LO12_NC",      4,  False, False),
                ("R_AARCH64_LDST16_ABS_LO12_NC",     4,  False, False),
                ("R_AARCH64_LDST32_ABS_LO12_NC",     4,  False, False),
                ("R_AARCH64_LDST64_ABS_LO12_NC",     4,  False, False),
                ("R_AARCH64_LDST128_ABS_LO12_NC",    4,  False, False),
                ("R_AARCH64_TSTBR14",                4,  True,  False),
                ("R_AARCH64_CONDBR19",               4,  True,  False),
                ("R_AARCH64_JUMP26",                 4,  True,  False),
                ("R_AARCH64_CALL26",                 4,  True,  False),
                ("R_AARCH64_ADR_GOT_PAGE",           4,  True,  False),
                ("R_AARCH64_LD64_GOT_LO12_NC",       4,  False, False),
            ],
        ),
        isa="aarch64",
        objdump="aarch64-linux-gnu-objdump",
        objdump_package="binutils-aarch64-linux-gnu",
    ),
    ENUM_E_MACHINE["EM_S390"]: Machine(
        name="S/390",
        byteorder=">",
        pc_bias=0,  # PC32/PC64 data fields count from the field; the DBL types say -2
        relocs=_reloc_table(
            ENUM_RELOC_TYPE_S390X,
            [
                # name              size pcrel  debug  bias
                ("R_390_NONE",        0,  False, False),
                ("R_390_8",           1,  False, False),
                ("R_390_12",          2,  False, False),
                ("R_390_16",          2,  False, False),
                ("R_390_20",          4,  False, False),
                ("R_390_32",          4,  False, True),
                ("R_390_64",          8,  False, True),
                ("R_390_PC16",        2,  True,  False),
                ("R_390_PC32",        4,  True,  True),
                ("R_390_PC64",        8,  True,  False),
                ("R_390_PC16DBL",     2,  True,  False, -2),
                ("R_390_PLT16DBL",    2,  True,  False, -2),
                ("R_390_PC32DBL",     4,  True,  False, -2),
                ("R_390_PLT32DBL",    4,  True,  False, -2),
                ("R_390_GOTENT",      4,  True,  False, -2),
                ("R_390_GOTPCDBL",    4,  True,  False, -2),
                ("R_390_GOTPLTENT",   4,  True,  False, -2),
                ("R_390_PLT32",       4,  True,  False),
                ("R_390_PLT64",       8,  True,  False),
            ],
        ),
        isa="s390",
        objdump="s390x-linux-gnu-objdump",
        objdump_package="binutils-s390x-linux-gnu",
    ),
}

#: Names of machines we do not read, for the error message.
_MACHINE_NAMES = {
    3: "i386", 40: "ARM", 183: "AArch64", 243: "RISC-V", 22: "S/390", 21: "PowerPC64"
}
_ENDIAN = {"<": "little-endian", ">": "big-endian"}
_ETYPES = {0: "ET_NONE", 2: "ET_EXEC (an executable)", 3: "ET_DYN (a shared object)", 4: "ET_CORE"}
_FIELD = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _supported() -> str:
    return " or ".join(m.name for m in MACHINES.values())


ELF_ERRORS: tuple[type[BaseException], ...] = (
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


def machine_of(data: bytes) -> Machine | None:
    """The :data:`MACHINES` entry an ELF header names (in its own byte order), else None; no
    other check (a cheap look before handing the file to another tool)."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        return None
    order = "<" if data[5] == 1 else ">"
    (e_machine,) = struct.unpack_from(order + "H", data, 18)
    machine = MACHINES.get(e_machine)
    return machine if machine is not None and machine.byteorder == order else None


class ZstdMissing(InspectError, ToolMissing):
    """A .ko.zst was given but neither the zstd command nor the zstandard module is available."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZ_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextlib.contextmanager
def guard(label: str) -> Iterator[None]:
    """Turn any parsing failure into a one-line InspectError naming the file."""
    try:
        yield
    except InspectError:
        raise
    except MemoryError as exc:
        raise InspectError(f"{label}: out of memory while parsing") from exc
    except OSError as exc:
        raise InspectError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    except ELF_ERRORS as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InspectError(f"{label}: malformed or truncated ELF: {detail}") from exc


def _decompress_zstd(raw: bytes, label: str) -> bytes:
    exe = shutil.which("zstd")
    if exe is not None:
        return _zstd_command(exe, raw, label)
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


def _zstd_command(exe: str, raw: bytes, label: str) -> bytes:
    """zstd -dc, reading no more than MAX_ELF_SIZE + 1 bytes of its output (a bomb is cut off
    and refused, never held in memory whole)."""
    with tempfile.TemporaryFile() as source:
        source.write(raw)
        source.seek(0)
        done = proc.run([exe, "-dc", "-q"], stdin=source, capture_output=True, timeout=300,
                        limit=MAX_ELF_SIZE, what=f"{label}: zstd", error=InspectError)
        out, err, code = bytes(done.stdout), bytes(done.stderr), done.returncode
    if len(out) > MAX_ELF_SIZE:
        raise InspectError(f"{label}: decompresses to more than {MAX_ELF_SIZE} bytes")
    if code != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise InspectError(f"{label}: zstd failed: {msg[-1] if msg else code}")
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
    with guard(label):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InspectError(f"{label}: not a regular file (a device, pipe or directory)")
        if st.st_size > MAX_INPUT_SIZE:
            raise InspectError(f"{label}: {st.st_size} bytes, larger than a kernel module can "
                               f"be ({MAX_INPUT_SIZE} at most)")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_INPUT_SIZE + 1)
        if len(raw) > MAX_INPUT_SIZE:
            raise InspectError(f"{label}: larger than a kernel module can be")
        return _decompress(raw, label)


# --------------------------------------------------------------------------------------------
# The in-memory ELF view
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
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
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int


class Reloc(NamedTuple):
    offset: int
    type: int  # number: what it means is the machine's (``ElfObject.machine.relocs``)
    sym: int
    addend: int


_make_reloc = Reloc._make


TargetKind = Literal["symbol", "absolute", "string", "inside", "const", "section"]


class Target(NamedTuple):
    """What a relocation refers to (:meth:`ElfObject.target`).

    ========  ======================  ===============================================
    kind      name                    offset
    ========  ======================  ===============================================
    symbol    the named symbol        from the symbol (addend, PC bias included)
    absolute  ""                      the same (undefined/absolute section symbol)
    string    the string section      in the section; ``text``: the string there
    inside    the symbol it lands in  inside that symbol
    const     the mergeable section   in the section; ``data``: the entsize bytes there
    section   the section             in the section (nothing known there)
    ========  ======================  ===============================================
    """

    kind: TargetKind
    name: str
    offset: int
    text: str = ""
    data: bytes = b""


@dataclass(frozen=True)
class Fragment:
    symbol: Symbol
    section: Section
    start: int
    end: int


class ElfObject:
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
            raise InspectError(f"{label}: 32-bit ELF; expected a 64-bit {_supported()} object")
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
                    f"{label}: {_ENDIAN[order]} ELF; expected a {_ENDIAN[other]}"
                    f" {meant.name} object"
                )
            if machine is not None:
                what = f"{machine.name} in {_ENDIAN[order]} byte order"
            else:
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
        if sec.type == _SHT_NOBITS:
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

    # -- relocations --------------------------------------------------------------------------
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
            # ELF64_R_SYM / ELF64_R_TYPE; Reloc._make is tuple.__new__: no Python call per entry
            relocs = [_make_reloc((off, info & 0xFFFFFFFF, info >> 32, addend))
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

    # -- functions ----------------------------------------------------------------------------
    def fragment(self, sym: Symbol) -> Fragment | None:
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
        if sym.type != _STT_SECTION and sym.name and not sym.name.startswith(".L"):
            return Target("symbol", sym.name, off)
        if sym.shndx == 0 or sym.shndx >= min(len(self.sections), _SHN_LORESERVE):
            return Target("absolute", "", off)
        sec = self.sections[sym.shndx]
        off += sym.value
        if sec.flags & _SHF_STRINGS and sec.type != _SHT_NOBITS and 0 <= off < sec.size:
            raw = self.data[sec.offset + off : sec.offset + sec.size]
            end = raw.find(b"\0")
            text = raw[: end if end >= 0 else len(raw)].decode("utf-8", "replace")
            return Target("string", sec.name, off, text=text)
        there = self.symbol_at(sym.shndx, off)
        if there is not None:
            return Target("inside", there.name, off - there.value)
        if sec.flags & _SHF_MERGE and sec.entsize and sec.type != _SHT_NOBITS:
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


def open_elf(path: Path) -> ElfObject:
    """Load (and decompress) ``path`` and read it as an ELF object; InspectError otherwise."""
    label = str(path)
    data = load_elf_bytes(path)
    with guard(label):
        return ElfObject(data, label)


