"""The ELF machines the inspector reads (x86-64, AArch64, S/390) and what each relocation
type of theirs patches: a table keyed by ``e_machine``, named as in pyelftools'
``ENUM_RELOC_TYPE_*`` and its RelocationHandler recipes; another machine is one more entry."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from elftools.elf.enums import (
    ENUM_E_MACHINE,
    ENUM_RELOC_TYPE_AARCH64,
    ENUM_RELOC_TYPE_S390X,
    ENUM_RELOC_TYPE_x64,
)


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
MACHINE_NAMES = {
    3: "i386", 40: "ARM", 183: "AArch64", 243: "RISC-V", 22: "S/390", 21: "PowerPC64"
}
ENDIAN = {"<": "little-endian", ">": "big-endian"}
ETYPES = {0: "ET_NONE", 2: "ET_EXEC (an executable)", 3: "ET_DYN (a shared object)", 4: "ET_CORE"}


def supported() -> str:
    return " or ".join(m.name for m in MACHINES.values())


def machine_of(data: bytes) -> Machine | None:
    """The :data:`MACHINES` entry an ELF header names (in its own byte order), else None; no
    other check (a cheap look before handing the file to another tool)."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        return None
    order = "<" if data[5] == 1 else ">"
    (e_machine,) = struct.unpack_from(order + "H", data, 18)
    machine = MACHINES.get(e_machine)
    return machine if machine is not None and machine.byteorder == order else None
