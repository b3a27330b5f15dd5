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
from collections.abc import Iterator
from pathlib import Path

from .elf import ElfObject, Fragment, Reloc, guard, open_elf, require_x86_code

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
    require_x86_code(elf.machine, elf.label, "function comparison")
    code = bytearray(elf.section_bytes(frag.section)[frag.start : frag.end])
    lines = []
    covered = bytearray(len(code))
    for rel in elf.relocations_in(frag.section.index, frag.start, frag.end):
        pos = rel.offset - frag.start
        size = elf.reloc_size(rel)
        code[pos : pos + size] = bytes(len(code[pos : pos + size]))
        covered[pos : pos + size] = b"\1" * len(covered[pos : pos + size])
        lines.append(f"{pos}:{rel.type}:{normalized_target(elf, rel)}")
    for pos, field_at, target in _local_branches(elf, frag, code, covered):
        code[field_at : field_at + 4] = bytes(4)
        lines.append(f"{pos}:branch:{normalize_symbol(target)}")
    lines.sort(key=lambda line: int(line.split(":", 1)[0]))
    return bytes(code) + b"\0relocs\0" + "\n".join(lines).encode()


def _local_branches(
    elf: ElfObject, frag: Fragment, code: bytearray, covered: bytearray
) -> Iterator[tuple[int, int, str]]:
    """(opcode position, rel32 position, target) of call/jmp/jcc rel32 instructions that
    land exactly on another function of the same section (no relocation needed there).

    Found by pattern, not by decoding: a stray opcode byte counts only if its displacement
    hits a function start outside this function, which leaves layout-independent noise at
    worst.  The opcodes are x86's."""
    starts = elf.function_starts(frag.section.index)
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
