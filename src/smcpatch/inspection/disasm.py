"""A second opinion on "changed" functions: compare instruction streams, not bytes.

A byte comparison (fndiff.changed_functions) flags a function whose code is the same but whose
loop-alignment padding moved because an earlier function in the section changed size (gcc-14
aligns small loops to 32 bytes, so an 80-byte shift changes the NOP padding). objdump's instruction
stream, with NOPs dropped, branch targets turned into instruction indices and addresses removed,
tells such layout-only differences from real ones.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from ..errors import InspectError
from ..plumbing import proc
from .elf import MACHINES, Machine, load_elf_bytes, machine_of

_LINE = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
_TARGET = re.compile(r"\b([0-9a-f]+) <([^>+]+)(\+0x[0-9a-f]+)?>")
_SUFFIX = re.compile(r"\.(?:constprop|isra|part|cold|llvm)\.\d+")


def objdump_available(machine: Machine | None = None) -> bool:
    """The machine's objdump (x86-64's own, or binutils' cross build for AArch64 / S/390)."""
    return shutil.which((machine or _X86_64).objdump) is not None


_X86_64 = next(m for m in MACHINES.values() if m.isa == "x86-64")


def instruction_stream(module: Path, function: str) -> list[str] | None:
    """Normalized instructions of `function` (None when its objdump or the function is
    missing)."""
    data = load_elf_bytes(module)
    machine = machine_of(data) or _X86_64
    if not objdump_available(machine):
        return None
    with tempfile.NamedTemporaryFile(suffix=".o") as plain:
        plain.write(data)  # objdump can't read .ko.xz
        plain.flush()
        done = proc.run([machine.objdump, "-dr", "--no-show-raw-insn",
                         f"--disassemble={function}", plain.name],
                        capture_output=True, text=True, timeout=120, what="objdump",
                        error=InspectError)
    if done.returncode != 0:
        return None
    return _normalize(str(done.stdout), function)


def _normalize(text: str, function: str) -> list[str] | None:
    rows: list[tuple[int, str]] = []
    relocs: dict[int, list[str]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        address, body = int(match.group(1), 16), match.group(2).split("#")[0].strip()
        if body.startswith(("R_X86_64", "R_AARCH64", "R_390")):  # belongs to the insn above
            if rows:
                relocs.setdefault(len(rows) - 1, []).append(_SUFFIX.sub("", body))
            continue
        if _is_padding(body):
            continue  # padding: its amount depends on where the function starts
        rows.append((address, body))
    if not rows:
        return None
    index_of = {address: i for i, (address, _) in enumerate(rows)}

    def target(match: re.Match[str]) -> str:
        name, address = match.group(2), int(match.group(1), 16)
        if name == function and address in index_of:
            return f"<insn {index_of[address]}>"
        return f"<{_SUFFIX.sub('', name)}>"

    return [_TARGET.sub(target, body) + "".join(f" [{r}]" for r in relocs.get(i, []))
            for i, (_, body) in enumerate(rows)]


def _is_padding(body: str) -> bool:
    """x86's nop forms, xchg %ax,%ax and int3; AArch64's nop; S/390's nopr/nop (bcr/bc 0,...)."""
    words = body.split()
    if any(word.startswith("nop") for word in words[:3]):
        return True
    return body.startswith(("xchg   %ax,%ax", "int3")) or (
        len(words) > 1 and words[0] in ("bcr", "bc") and words[1].startswith("0,"))


def layout_only_change(before: Path, after: Path, function: str) -> bool:
    """True when the function's instructions are the same and only padding/addresses differ."""
    a, b = instruction_stream(before, function), instruction_stream(after, function)
    return a is not None and a == b
