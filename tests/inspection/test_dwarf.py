"""inspection.dwarf: the subroutines inlined into smc_clc_prfx_match, from the object's own
DWARF, a linked module's or a separate smc_clc.o's."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.inspection import changed_functions, inspect_module, same_function
from smcpatch.inspection.elf import ElfObject
from tests import elfobjs

FN = "smc_clc_prfx_match"


def test_dwarf_inlined_subroutines(objs: dict[str, Path]) -> None:
    vuln = inspect_module(objs["vuln_g"])
    fixed = inspect_module(objs["fixed_g"])
    assert vuln.has_dwarf and not vuln.stripped
    assert vuln.evidence.dwarf_inlined is not None
    assert "sk_dst_get" in vuln.evidence.dwarf_inlined
    assert "rcu_read_lock" in vuln.evidence.dwarf_inlined  # nested inside sk_dst_get
    assert fixed.evidence.dwarf_inlined is not None
    assert {"__sk_dst_get", "dst_dev_rcu"} <= set(fixed.evidence.dwarf_inlined)
    assert "sk_dst_get" not in fixed.evidence.dwarf_inlined


def test_dwarf_of_a_linked_module(objs: dict[str, Path], tmp_path: Path) -> None:
    """Several compile units and relocated DWARF, like smc.ko: the smc_clc.c unit is found."""
    linked = elfobjs.link_relocatable(
        tmp_path / "smc.ko", objs["changes_a"], objs["other"], objs["vuln_g"]
    )
    info = inspect_module(linked)
    assert info.has_dwarf
    assert info.evidence.dwarf_inlined is not None
    assert "sk_dst_get" in info.evidence.dwarf_inlined
    assert info.evidence.verdict == "vulnerable"
    assert same_function(linked, objs["vuln_g"], FN) is True
    assert changed_functions(objs["changes_a"], linked) == sorted(
        ["smc_clc_something_else", FN, FN + ".cold"]
    )


def test_dwarf_of_a_unit_not_named_smc_clc(objs: dict[str, Path], tmp_path: Path) -> None:
    obj = elfobjs.compile_c(tmp_path, elfobjs.SMC_CLC_C, "renamed.o", filename="renamed.c")
    ev = inspect_module(obj).evidence
    assert ev.dwarf_inlined is not None and "sk_dst_get" in ev.dwarf_inlined


@pytest.mark.parametrize("key", ["vuln_nog", "vuln_stripped", "fixed_stripped"])
def test_no_dwarf(objs: dict[str, Path], key: str) -> None:
    info = inspect_module(objs[key])
    assert not info.has_dwarf and info.stripped
    assert info.evidence.dwarf_inlined is None
    assert any("no DWARF" in r for r in info.evidence.reasons)


def test_dwarf_object_supplies_the_inlines(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["vuln_stripped"], dwarf_object=objs["vuln_g"])
    assert info.evidence.dwarf_inlined is not None
    assert "sk_dst_get" in info.evidence.dwarf_inlined
    assert info.evidence.verdict == "vulnerable"
    assert not info.has_dwarf  # describes the module, not the helper object


def test_dwarf_object_of_another_build_is_ignored(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["vuln_stripped"], dwarf_object=objs["fixed_g"])
    assert info.evidence.dwarf_inlined is None
    assert info.evidence.verdict == "vulnerable"
    assert any("differs from the module's" in r for r in info.evidence.reasons)


def test_dwarf_object_without_the_function(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["fixed_stripped"], dwarf_object=objs["other"])
    assert info.evidence.dwarf_inlined is None
    assert info.evidence.verdict == "fixed"
    assert any("does not contain" in r for r in info.evidence.reasons)


def test_unreadable_dwarf_leaves_the_relocation_evidence(
    objs: dict[str, Path], tmp_path: Path
) -> None:
    data = bytearray(objs["vuln_g"].read_bytes())
    elf = ElfObject(bytes(data), "x")
    abbrev = elf.by_name[".debug_abbrev"]
    data[abbrev.offset : abbrev.offset + abbrev.size] = b"\xff" * abbrev.size
    path = tmp_path / "smc.ko"
    path.write_bytes(bytes(data))
    ev = inspect_module(path).evidence
    assert ev.verdict == "vulnerable"
    assert ev.dwarf_inlined is None
    assert any("relocations only" in r for r in ev.reasons)

