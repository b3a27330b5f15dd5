"""A kpatch-like function comparison: which functions differ between two builds of a module.

A function's *normalized body* is its bytes with every relocated field zeroed, plus the list
of what those relocations point to, described independently of the layout (local-symbol
numeric suffixes dropped, section-relative references resolved to the symbol they land in,
strings to their text, mergeable constants to their bytes).  Functions that merely moved, or
whose callees and strings moved, compare equal.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .elf import ElfObject, Fragment, Reloc, guard, open_elf

_NUM_SUFFIX = re.compile(r"\.\d+")
_SOURCE_PATH = re.compile(r"[^\s:\"'/]*(?:/[^\s:\"'/]+)*/([^\s:\"'/]+\.[chS])\b")
_LOCAL_LABEL = re.compile(r"^\.L[A-Za-z_]*\d+$")


def normalize_symbol(name: str) -> str:
    """Drop the layout-dependent parts of a local symbol: ``foo.constprop.0`` -> ``foo.constprop``,
    ``__key.12`` -> ``__key``, ``bar.llvm.123`` -> ``bar.llvm``, ``.LC12`` -> ``.L``."""
    if _LOCAL_LABEL.match(name):
        return ".L"
    return _NUM_SUFFIX.sub("", name)


def normalized_target(elf: ElfObject, rel: Reloc) -> str:
    """What a relocation refers to, in a form that does not depend on where things were laid
    out (see :meth:`ElfObject.target <smcpatch.inspection.elf.ElfObject.target>`)."""
    t = elf.target(rel)
    if t.kind == "symbol":
        return f"{normalize_symbol(t.name)}{rel.addend:+d}"
    if t.kind == "absolute":
        return f"<abs>{rel.addend:+d}"
    if t.kind == "inside":
        return f"{normalize_symbol(t.name)}{t.offset:+d}"
    secnorm = normalize_symbol(t.name)
    if t.kind == "string":
        # __FILE__ strings carry the build directory: keep only the file name.
        norm = _SOURCE_PATH.sub(r".../\1", t.text)
        return f"str:{secnorm}:{norm!r}"
    if t.kind == "const":
        return f"const:{secnorm}:{t.data.hex()}"
    return f"{secnorm}+?"


def normalized_body(elf: ElfObject, frag: Fragment) -> bytes:
    """The fragment's bytes with relocated fields zeroed, plus its relocation targets.

    Calls and jumps to other functions of the same section need no relocation (the
    assembler resolved them), so their displacement changes whenever code moves: those
    are zeroed too and their target function's name goes into the signature.
    """
    code = bytearray(elf.section_bytes(frag.section)[frag.start : frag.end])
    lines = []
    covered = bytearray(len(code))
    for rel in elf.relocations_in(frag.section.index, frag.start, frag.end):
        pos = rel.offset - frag.start
        size = elf.reloc_size(rel)
        code[pos : pos + size] = bytes(len(code[pos : pos + size]))
        covered[pos : pos + size] = b"\1" * len(covered[pos : pos + size])
        lines.append(f"{pos}:{rel.type}:{normalized_target(elf, rel)}")
    starts = elf.function_starts(frag.section.index)
    for branch in LOCAL_BRANCHES[elf.machine.isa](frag, bytes(code), covered, starts):
        code[branch.field_at : branch.field_at + len(branch.field)] = branch.field
        lines.append(f"{branch.pos}:branch:{normalize_symbol(branch.target)}")
    lines.sort(key=lambda line: int(line.split(":", 1)[0]))
    return bytes(code) + b"\0relocs\0" + "\n".join(lines).encode()


@dataclass(frozen=True)
class LocalBranch:
    """A call or jump that lands on another function of the same section without a relocation:
    its displacement (at field_at) is replaced by ``field`` (the opcode bits kept, if any)."""

    pos: int
    field_at: int
    field: bytes
    target: str


BranchFinder = Callable[[Fragment, bytes, bytearray, dict[int, str]], Iterator[LocalBranch]]


def _landing(frag: Fragment, starts: dict[int, str], target: int) -> str | None:
    """The function a branch target is the start of, outside this fragment, else None."""
    if frag.start <= target < frag.end:
        return None
    return starts.get(target)


def _x86_branches(frag: Fragment, code: bytes, covered: bytearray,
                  starts: dict[int, str]) -> Iterator[LocalBranch]:
    """call/jmp/jcc rel32 (E8, E9, 0F 8x), found by pattern, not by decoding (x86 is variable
    length): a stray opcode byte counts only if its displacement hits a function start outside
    this function, which leaves layout-independent noise at worst."""
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
        name = _landing(frag, starts, frag.start + field_at + 4 + disp)
        if name is None:
            continue
        last_end = field_at + 4
        yield LocalBranch(pos, field_at, bytes(4), name)


def _aarch64_branches(frag: Fragment, code: bytes, covered: bytearray,
                      starts: dict[int, str]) -> Iterator[LocalBranch]:
    """BL and B (imm26, in words, from the instruction itself): every instruction is one
    aligned little-endian word, so this is a decode, not a guess."""
    first = -frag.start % 4  # the section's words, wherever the fragment starts
    for pos in range(first, len(code) - 3, 4):
        if any(covered[pos : pos + 4]):
            continue
        (word,) = struct.unpack_from("<I", code, pos)
        if word & 0x7C000000 != 0x14000000:  # 0x94...: bl, 0x14...: b
            continue
        imm = word & 0x03FFFFFF
        imm -= (imm & 0x02000000) << 1
        name = _landing(frag, starts, frag.start + pos + imm * 4)
        if name is not None:
            yield LocalBranch(pos, pos, struct.pack("<I", word & 0xFC000000), name)


def _s390_branches(frag: Fragment, code: bytes, covered: bytearray,
                   starts: dict[int, str]) -> Iterator[LocalBranch]:
    """BRASL and BRCL (C0x5 / C0x4: a signed 32-bit halfword count from the instruction's
    start, big-endian), found by pattern at halfword boundaries and kept only when they land
    on another function's start, as for x86."""
    first = -frag.start % 2
    last_end = -1
    for pos in range(first, len(code) - 5, 2):
        if pos < last_end or code[pos] != 0xC0 or code[pos + 1] & 0x0F not in (4, 5):
            continue
        if any(covered[pos : pos + 6]):
            continue
        (halfwords,) = struct.unpack_from(">i", code, pos + 2)
        name = _landing(frag, starts, frag.start + pos + halfwords * 2)
        if name is not None:
            last_end = pos + 6
            yield LocalBranch(pos, pos + 2, bytes(4), name)


LOCAL_BRANCHES: dict[str, BranchFinder] = {
    "x86-64": _x86_branches,
    "aarch64": _aarch64_branches,
    "s390": _s390_branches,
}


def function_signature(elf: ElfObject, function: str) -> bytes | None:
    """The normalized bodies of ``function`` and its fragments, None if it is missing."""
    frags = elf.function_fragments(function)
    if not frags:
        return None
    parts = []
    for frag in frags:
        name = normalize_symbol(frag.symbol.name).encode()
        parts.append(name + b"\0" + normalized_body(elf, frag))
    return b"\0fragment\0".join(parts)


def _bodies(elf: ElfObject) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for frag in elf.unique_fragments(lambda name: not name.startswith(("__pfx_", "__cfi_"))):
        name = normalize_symbol(frag.symbol.name)
        if name in out:
            n = 2
            while f"{name}~{n}" in out:
                n += 1
            name = f"{name}~{n}"
        out[name] = normalized_body(elf, frag)
    return out


def function_bodies(path: Path) -> dict[str, bytes]:
    """Every defined FUNC symbol (fragments separately) -> its normalized body.

    Keys are normalized names (``foo.constprop.0`` -> ``foo.constprop``); a second function of
    the same normalized name gets ``~2``.  ``__pfx_``/``__cfi_`` padding symbols are left out.
    """
    elf = open_elf(Path(path))
    with guard(elf.label):
        return _bodies(elf)


def changed_functions(before: Path, after: Path) -> list[str]:
    """Sorted names of functions whose normalized body differs, or that exist in one only."""
    return changed_between(function_bodies(before), function_bodies(after))


def changed_between(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    """changed_functions for bodies already read with function_bodies."""
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def same_function(a: Path, b: Path, function: str) -> bool | None:
    """Whether ``function`` (with its fragments) is identical in both, None if missing in either."""
    ea, eb = open_elf(Path(a)), open_elf(Path(b))
    with guard(ea.label):
        sa = function_signature(ea, function)
    with guard(eb.label):
        sb = function_signature(eb, function)
    if sa is None or sb is None:
        return None
    return sa == sb
