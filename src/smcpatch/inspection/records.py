"""The records of the in-memory ELF view: sections, symbols, relocations, what a relocation
points to, function fragments; and the ELF constants the readers use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

# ELF constants.
ET_REL = 1
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHF_MERGE = 0x10
SHF_STRINGS = 0x20
STT_FUNC = 2
STT_SECTION = 3
STT_FILE = 4
SHN_LORESERVE = 0xFF00


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


make_reloc = Reloc._make


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
