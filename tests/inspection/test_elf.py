"""inspection.elf: loading and decompressing, reading the ELF object (fragments incl. .cold),
and the one-line InspectError for every kind of bad input."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import pytest

from smcpatch.errors import ToolMissing
from smcpatch.inspection import (
    InspectError,
    changed_functions,
    function_bodies,
    inspect_module,
    load_elf_bytes,
)
from smcpatch.inspection.elf import ElfObject
from tests import elfobjs

FN = "smc_clc_prfx_match"


def test_gcc_splits_a_cold_fragment(objs: dict[str, Path]) -> None:
    for key in ("vuln_g", "fixed_g"):
        ev = inspect_module(objs[key]).evidence
        assert set(ev.fragments) == {FN, FN + ".cold"}, key
        assert all(size > 0 for size in ev.fragments.values())
        assert any(s.fragment == FN + ".cold" for s in ev.calls), "no relocation in .cold"


@pytest.mark.parametrize("compress", [elfobjs.xz_copy, elfobjs.gz_copy, elfobjs.zst_copy])
def test_compressed_copies(objs: dict[str, Path], compress: object, tmp_path: Path) -> None:
    src = tmp_path / "smc.ko"
    shutil.copy(objs["vuln_stripped"], src)
    packed = compress(src)  # type: ignore[operator]
    assert load_elf_bytes(packed) == src.read_bytes()
    info = inspect_module(packed)
    assert info.evidence.verdict == "vulnerable"
    assert info.name == "smc"  # no .modinfo: the file name without .ko.xz
    assert function_bodies(packed) == function_bodies(src)
    assert changed_functions(src, packed) == []


def test_zstd_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packed = tmp_path / "smc.ko.zst"
    packed.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 32)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails
    with pytest.raises(InspectError, match="zstd") as exc:
        load_elf_bytes(packed)
    assert isinstance(exc.value, ToolMissing)
    assert "apt-get install zstd" in str(exc.value)


@pytest.mark.parametrize(
    ("suffix", "payload", "message"),
    [
        (".xz", b"\xfd7zXZ\x00garbage", "corrupt xz data"),
        (".gz", b"\x1f\x8b\x08\x00garbage", "(corrupt|truncated) gzip data"),
        (".gz", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4, "corrupt gzip data"),
        (".xz", None, "truncated xz"),
        (".gz", None, "truncated gzip"),
    ],
)
def test_corrupt_compression(
    objs: dict[str, Path], tmp_path: Path, suffix: str, payload: bytes | None, message: str
) -> None:
    path = tmp_path / f"smc.ko{suffix}"
    if payload is None:  # a valid stream cut in half
        full = (elfobjs.xz_copy if suffix == ".xz" else elfobjs.gz_copy)(objs["vuln_g"])
        payload = full.read_bytes()[: full.stat().st_size // 2]
    path.write_bytes(payload)
    with pytest.raises(InspectError, match=message):
        inspect_module(path)


def test_not_elf(tmp_path: Path) -> None:
    path = tmp_path / "smc.ko"
    path.write_text("#!/bin/sh\necho not a module\n")
    with pytest.raises(InspectError, match=r"smc\.ko: not an ELF file") as exc:
        inspect_module(path)
    assert "\n" not in exc.value.one_line()


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "smc.ko"
    path.write_bytes(b"")
    with pytest.raises(InspectError, match="not an ELF file"):
        inspect_module(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InspectError, match="cannot read: No such file"):
        inspect_module(tmp_path / "nope.ko")


@pytest.mark.parametrize("cut", [10, 63, 64, 200, 0.5, 0.9, -1])
def test_truncated(objs: dict[str, Path], tmp_path: Path, cut: float) -> None:
    data = objs["vuln_g"].read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    path = tmp_path / "smc.ko"
    path.write_bytes(data[:n])
    with pytest.raises(InspectError, match="truncated") as exc:
        inspect_module(path)
    assert str(path) in str(exc.value)


def _patched(src: Path, dst: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(src.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (4, "<B", 1, "32-bit ELF"),
        (5, "<B", 2, "big-endian ELF; expected a little-endian x86-64 object"),
        (18, "<H", 243, "ELF for RISC-V; expected x86-64 or AArch64 or S/390"),
        (18, "<H", 22, "ELF for S/390 in little-endian byte order; expected x86-64"),
        (16, "<H", 2, "expected a relocatable object"),
        (16, "<H", 3, "shared object"),
    ],
)
def test_wrong_kind_of_elf(
    objs: dict[str, Path], tmp_path: Path, offset: int, fmt: str, value: int, message: str
) -> None:
    path = _patched(objs["vuln_g"], tmp_path / "smc.ko", offset, fmt, value)
    with pytest.raises(InspectError, match=message):
        inspect_module(path)


def test_symbol_outside_its_section(objs: dict[str, Path], tmp_path: Path) -> None:
    """A corrupt st_size must not read past the section."""
    data = bytearray(objs["vuln_stripped"].read_bytes())
    elf = ElfObject(bytes(data), "x")
    assert elf.symtab is not None
    sym = next(s for s in elf.symbols if s.name == FN)
    struct.pack_into("<Q", data, elf.symtab.offset + sym.index * 24 + 16, 1 << 40)
    path = tmp_path / "smc.ko"
    path.write_bytes(bytes(data))
    with pytest.raises(InspectError, match="lies outside section"):
        inspect_module(path)

