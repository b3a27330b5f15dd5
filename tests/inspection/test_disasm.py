"""Layout-only changes: same instructions, different padding, told apart from real changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from smcpatch import inspection
from smcpatch.inspection import disasm
from tests.elfobjs import require_gcc

SOURCE = """
int g[64];
int first(int x) {{ {first} }}
int second(int n) {{ int s = 0; for (int i = 0; i < n; i++) s += g[i & 63] ^ i; return s{tail}; }}
"""
SHORT = "return x * 3;"
LONG = "int s = 0; for (int i = 0; i < x; i++) s += g[i] * i; return s + x;"


def _object(tmp: Path, name: str, first: str, tail: str = "") -> Path:
    src = tmp / f"{name}.c"
    src.write_text(SOURCE.format(first=first, tail=tail))
    out = tmp / f"{name}.o"
    # unaligned function starts + 32-byte loop alignment: moving `second` changes its padding,
    # as gcc-14's loop alignment does in smc_clc.o when the fix shrinks smc_clc_prfx_match
    subprocess.run([require_gcc(), "-O2", "-falign-functions=1", "-falign-loops=32", "-c", str(src),
                    "-o", str(out)], check=True)
    return out


@pytest.fixture
def objects(tmp_path: Path) -> tuple[Path, Path, Path]:
    if not disasm.objdump_available():
        pytest.skip("objdump (binutils) is not installed")
    return (_object(tmp_path, "before", SHORT), _object(tmp_path, "after", LONG),
            _object(tmp_path, "real", LONG, tail=" + 1"))


def test_moved_function_is_flagged_by_bytes_but_same_by_instructions(
        objects: tuple[Path, Path, Path]) -> None:
    before, after, _ = objects
    assert inspection.changed_functions(before, after) == ["first", "second"]
    assert disasm.layout_only_change(before, after, "second")
    assert not disasm.layout_only_change(before, after, "first")


def test_a_real_change_is_not_layout_only(objects: tuple[Path, Path, Path]) -> None:
    before, _, real = objects
    assert "second" in inspection.changed_functions(before, real)
    assert not disasm.layout_only_change(before, real, "second")


def test_missing_function_is_never_layout_only(objects: tuple[Path, Path, Path]) -> None:
    before, after, _ = objects
    assert disasm.instruction_stream(before, "no_such_function") is None
    assert not disasm.layout_only_change(before, after, "no_such_function")
