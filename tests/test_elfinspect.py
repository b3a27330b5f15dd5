"""Tests of the inspect stage on small objects gcc builds here, and optionally on real modules.

Real modules: set SMCPATCH_TEST_MODULES_DIR to a directory holding smc.ko / smc.ko.xz files
(searched recursively), e.g. extracted Debian linux-image packages.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import elfobjs  # noqa: E402

from smcpatch import inspection  # noqa: E402
from smcpatch.errors import ToolMissing  # noqa: E402
from smcpatch.inspection import (  # noqa: E402
    CallSite,
    InspectError,
    ModuleInfo,
    changed_functions,
    check_modversions,
    check_vermagic,
    function_bodies,
    inspect_module,
    load_elf_bytes,
    read_module_symvers,
    same_function,
)
from smcpatch.inspection.elf import ElfObject  # noqa: E402
from smcpatch.inspection.verdict import Sites, decide  # noqa: E402

FN = "smc_clc_prfx_match"


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every object the tests use, compiled once."""
    d = tmp_path_factory.mktemp("elfobjs")
    c = elfobjs.compile_c
    o: dict[str, Path] = {
        "vuln_g": c(d, elfobjs.SMC_CLC_C, "vuln_g.o"),
        "fixed_g": c(d, elfobjs.SMC_CLC_C, "fixed_g.o", defines=("FIXED",)),
        "vuln_nog": c(d, elfobjs.SMC_CLC_C, "vuln_nog.o", debug=False),
        "fixed_nog": c(d, elfobjs.SMC_CLC_C, "fixed_nog.o", debug=False, defines=("FIXED",)),
        "vuln_pie": c(d, elfobjs.SMC_CLC_C, "vuln_pie.o", kernel_model=False),
        "nolock": c(d, elfobjs.SMC_CLC_C, "nolock.o", defines=("NOLOCK",)),
        "nounlock": c(d, elfobjs.SMC_CLC_C, "nounlock.o", defines=("NOUNLOCK",)),
        "modinfo": c(d, elfobjs.SMC_CLC_C, "modinfo.o", debug=False, defines=("MODINFO",)),
        "other": c(d, elfobjs.OTHER_C, "other.o"),
        "changes_a": c(d, elfobjs.CHANGES_C, "changes_a.o", filename="changes.c"),
        "changes_b": c(
            d, elfobjs.CHANGES_C, "changes_b.o", filename="changes.c", defines=("VARIANT",)
        ),
        "changes_a_pie": c(
            d, elfobjs.CHANGES_C, "changes_a_pie.o", filename="changes.c", kernel_model=False
        ),
        "changes_b_pie": c(
            d,
            elfobjs.CHANGES_C,
            "changes_b_pie.o",
            filename="changes.c",
            kernel_model=False,
            defines=("VARIANT",),
        ),
    }
    o["vuln_stripped"] = elfobjs.strip_debug(o["vuln_g"], d / "vuln_stripped.o")
    o["fixed_stripped"] = elfobjs.strip_debug(o["fixed_g"], d / "fixed_stripped.o")
    return o


def _targets(sites: list[CallSite]) -> set[str]:
    return {s.target for s in sites}


# ---------------------------------------------------------------------------------------------
# Verdicts on gcc-built objects
# ---------------------------------------------------------------------------------------------


def test_gcc_splits_a_cold_fragment(objs: dict[str, Path]) -> None:
    for key in ("vuln_g", "fixed_g"):
        ev = inspect_module(objs[key]).evidence
        assert set(ev.fragments) == {FN, FN + ".cold"}, key
        assert all(size > 0 for size in ev.fragments.values())
        assert any(s.fragment == FN + ".cold" for s in ev.calls), "no relocation in .cold"


@pytest.mark.parametrize("key", ["vuln_g", "vuln_nog", "vuln_stripped", "vuln_pie"])
def test_vulnerable_shape(objs: dict[str, Path], key: str) -> None:
    ev = inspect_module(objs[key]).evidence
    assert ev.verdict == "vulnerable", ev.reasons
    assert "dst_release" in _targets(ev.dst_ref_sites)
    assert ev.rcu_lock_sites and ev.rcu_unlock_sites
    assert any("dst_release" in r for r in ev.reasons)
    for site in ev.dst_ref_sites + ev.rcu_lock_sites + ev.rcu_unlock_sites + ev.calls:
        assert 0 <= site.offset < ev.fragments[site.fragment]
    assert set(ev.dst_ref_sites) <= set(ev.calls)


@pytest.mark.parametrize("key", ["fixed_g", "fixed_nog", "fixed_stripped"])
def test_fixed_shape(objs: dict[str, Path], key: str) -> None:
    ev = inspect_module(objs[key]).evidence
    assert ev.verdict == "fixed", ev.reasons
    assert ev.dst_ref_sites == []
    assert _targets(ev.rcu_lock_sites) == {"__rcu_read_lock"}
    assert _targets(ev.rcu_unlock_sites) == {"__rcu_read_unlock"}
    for site in ev.rcu_lock_sites + ev.rcu_unlock_sites:
        assert 0 <= site.offset < ev.fragments[site.fragment]
    assert "dst_release" not in _targets(ev.calls)


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


def test_no_rcu_lock_is_unknown(objs: dict[str, Path]) -> None:
    ev = inspect_module(objs["nolock"]).evidence
    assert ev.verdict == "unknown"
    assert ev.rcu_lock_sites == [] and ev.dst_ref_sites == []
    assert any("never calls __rcu_read_lock" in r for r in ev.reasons)


def test_lock_without_unlock_is_unknown(objs: dict[str, Path]) -> None:
    ev = inspect_module(objs["nounlock"]).evidence
    assert ev.rcu_lock_sites and not ev.rcu_unlock_sites
    assert ev.verdict == "unknown"


def _sites(*targets: str) -> Sites:
    s = Sites()
    for i, t in enumerate(targets):
        site = CallSite(FN, i * 5, t)
        s.calls.append(site)
        if t in inspection.RCU_LOCK:
            s.lock.append(site)
        elif t in inspection.RCU_UNLOCK:
            s.unlock.append(site)
        elif t in inspection.DST_REF:
            s.dst.append(site)
    return s


@pytest.mark.parametrize(
    ("targets", "inlined", "verdict"),
    [
        (("__rcu_read_lock", "__rcu_read_unlock", "dst_release"), None, "vulnerable"),
        (("__rcu_read_lock", "__rcu_read_unlock", "rcuref_get_slowpath"), None, "vulnerable"),
        (("__rcu_read_lock", "__rcu_read_unlock"), None, "fixed"),
        (("__rcu_read_lock", "__rcu_read_unlock"), ["__sk_dst_get", "dst_dev_rcu"], "fixed"),
        (("__rcu_read_lock", "__rcu_read_unlock"), [], "fixed"),  # DWARF without inline info
        # DWARF contradicting the relocations
        (("__rcu_read_lock", "__rcu_read_unlock", "dst_release"), ["__sk_dst_get"], "unknown"),
        (("__rcu_read_lock", "__rcu_read_unlock"), ["sk_dst_get", "rcu_read_lock"], "unknown"),
        # DWARF showing neither shape
        (("__rcu_read_lock", "__rcu_read_unlock"), ["ipv6_addr_type"], "unknown"),
        (("__rcu_read_lock",), None, "unknown"),
        ((), None, "unknown"),
    ],
)
def test_verdict_rules(
    targets: tuple[str, ...], inlined: list[str] | None, verdict: str
) -> None:
    got, reasons = decide(FN, _sites(*targets), inlined)
    assert got == verdict, reasons
    assert reasons and all(isinstance(r, str) and r for r in reasons)


# ---------------------------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Errors: every failure is a one-line InspectError naming the file
# ---------------------------------------------------------------------------------------------


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


def test_lacks_function(objs: dict[str, Path]) -> None:
    with pytest.raises(InspectError, match="does not contain smc_clc_prfx_match: not smc.ko?"):
        inspect_module(objs["other"])


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
        (5, "<B", 2, "big-endian"),
        (18, "<H", 183, "ELF for AArch64; expected x86-64"),
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


@pytest.fixture(scope="module")
def stripped_bytes(objs: dict[str, Path]) -> bytes:
    return objs["vuln_stripped"].read_bytes()


@pytest.fixture(scope="module")
def dwarf_bytes(objs: dict[str, Path]) -> bytes:
    return objs["fixed_g"].read_bytes()


_FIXTURES_OK = [HealthCheck.function_scoped_fixture]


def _inspect_bytes(data: bytes, tmp: Path) -> None:
    path = tmp / "fuzz.ko"
    path.write_bytes(data)
    try:
        inspect_module(path)
        function_bodies(path)
    except InspectError as exc:
        assert exc.one_line()


@settings(max_examples=150, deadline=None, suppress_health_check=_FIXTURES_OK)
@given(cut=st.integers(min_value=0, max_value=100_000))
def test_fuzz_truncation(
    dwarf_bytes: bytes, tmp_path_factory: pytest.TempPathFactory, cut: int
) -> None:
    _inspect_bytes(dwarf_bytes[: cut % (len(dwarf_bytes) + 1)], tmp_path_factory.mktemp("t"))


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURES_OK)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_corruption(
    stripped_bytes: bytes,
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[int, int]],
) -> None:
    """Random byte edits: the result is either an answer or an InspectError, never a crash."""
    data = bytearray(stripped_bytes)
    for pos, value in edits:
        data[pos % len(data)] = value
    _inspect_bytes(bytes(data), tmp_path_factory.mktemp("c"))


# ---------------------------------------------------------------------------------------------
# Module metadata: .modinfo, vermagic, __versions against Module.symvers
# ---------------------------------------------------------------------------------------------


def test_modinfo_and_versions(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["modinfo"])
    assert info.name == "smc"
    assert info.vermagic == "6.1.0-50-amd64 SMP preempt mod_unload modversions "
    assert info.srcversion == "0123456789ABCDEF012345"
    assert info.modversions == {
        "__rcu_read_lock": 0x1D24C881,
        "__rcu_read_unlock": 0x8D522714,
        "dst_release": 0xDEADBEEF,
    }


def test_check_vermagic(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["modinfo"])
    ok, why = check_vermagic(info, "6.1.0-50-amd64")
    assert ok, why
    ok, why = check_vermagic(info, "6.1.0-5")  # a prefix of the release is not the release
    assert not ok and "6.1.0-50-amd64" in why
    ok, why = check_vermagic(info, "6.12.117+deb12-amd64")
    assert not ok and "refuse" in why
    ok, why = check_vermagic(replace(info, vermagic=None), "6.1.0-50-amd64")
    assert not ok and "no vermagic" in why


def _symvers(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Module.symvers"
    path.write_text(text)
    return path


def test_read_module_symvers(tmp_path: Path) -> None:
    path = _symvers(
        tmp_path,
        "0x1d24c881\t__rcu_read_lock\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
        "0x8d522714\t__rcu_read_unlock\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
        "0xdeadbeef\tdst_release\tvmlinux\tEXPORT_SYMBOL\t\n"
        "0x00000001\tib_register_client\tdrivers/infiniband/core/ib_core\tEXPORT_SYMBOL\t\n"
        "0x12345678\tsome_ns_sym\tvmlinux\tEXPORT_SYMBOL_GPL\tSOME_NS\n",
    )
    symvers = read_module_symvers(path)
    assert symvers["dst_release"] == 0xDEADBEEF
    assert symvers["some_ns_sym"] == 0x12345678
    assert len(symvers) == 5


@pytest.mark.parametrize("text", ["garbage without tabs\n", "0xZZ\tsym\tvmlinux\tEXPORT_SYMBOL\n"])
def test_read_module_symvers_malformed(tmp_path: Path, text: str) -> None:
    with pytest.raises(InspectError, match=r"Module\.symvers:1"):
        read_module_symvers(_symvers(tmp_path, text))


def test_check_modversions(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["modinfo"])
    good = {"__rcu_read_lock": 0x1D24C881, "__rcu_read_unlock": 0x8D522714,
            "dst_release": 0xDEADBEEF, "unrelated": 1}
    assert check_modversions(info, good) == (True, [])
    bad = dict(good, dst_release=0x1)
    del bad["__rcu_read_unlock"]
    ok, problems = check_modversions(info, bad)
    assert not ok
    assert problems == [
        "__rcu_read_unlock: not exported by the kernel (missing from Module.symvers)",
        "dst_release: CRC 0xdeadbeef in the module, 0x00000001 in the kernel",
    ]


def test_check_modversions_without_versions(objs: dict[str, Path]) -> None:
    info = inspect_module(objs["vuln_stripped"])
    assert info.modversions == {}
    assert check_modversions(info, {"x": 0})[0]  # kernel without CONFIG_MODVERSIONS
    ok, problems = check_modversions(info, {"x": 0x1234})
    assert not ok and "no __versions" in problems[0]


# ---------------------------------------------------------------------------------------------
# kpatch-style comparison
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["", "_pie"])
def test_changed_functions_reports_only_the_changed_one(objs: dict[str, Path], model: str) -> None:
    a, b = objs[f"changes_a{model}"], objs[f"changes_b{model}"]
    assert {"f_first", "f_second", "f_third"} <= set(function_bodies(a))
    assert set(function_bodies(a)) == set(function_bodies(b))
    assert changed_functions(a, b) == ["f_first"]
    assert same_function(a, b, "f_third") is True  # moved, and its callee and strings moved
    assert same_function(a, b, "f_second") is True
    assert same_function(a, b, "f_first") is False
    assert same_function(a, b, "no_such_function") is None
    assert changed_functions(a, a) == []


def test_changed_functions_sees_a_changed_callee(objs: dict[str, Path]) -> None:
    assert changed_functions(objs["vuln_g"], objs["fixed_g"]) == [FN, FN + ".cold"]
    assert same_function(objs["vuln_g"], objs["fixed_g"], FN) is False


def test_debug_info_does_not_change_code(objs: dict[str, Path]) -> None:
    assert changed_functions(objs["vuln_g"], objs["vuln_stripped"]) == []
    assert changed_functions(objs["vuln_g"], objs["vuln_nog"]) == []
    assert same_function(objs["fixed_g"], objs["fixed_stripped"], FN) is True


def test_function_only_in_one(objs: dict[str, Path]) -> None:
    changed = changed_functions(objs["other"], objs["fixed_stripped"])
    assert changed == sorted(["smc_clc_something_else", FN, FN + ".cold"])


def test_normalize_symbol() -> None:
    n = inspection.normalize_symbol
    assert n("smc_clc_prfx_set4_rcu.isra.0") == "smc_clc_prfx_set4_rcu.isra"
    assert n("foo.constprop.12") == "foo.constprop"
    assert n("__key.37") == "__key"
    assert n("bar.llvm.1234567") == "bar.llvm"
    assert n(".LC12") == ".L"
    assert n("smc_clc_prfx_match.cold") == "smc_clc_prfx_match.cold"


# ---------------------------------------------------------------------------------------------
# Real modules (SMCPATCH_TEST_MODULES_DIR)
# ---------------------------------------------------------------------------------------------

#: Debian's own (stripped) modules, established in DESIGN.md "Facts established". Our own
#: builds carry DWARF and may hold either variant, so they only get the consistency checks.
KNOWN_RELEASES = {
    "6.1.0-50-amd64": "vulnerable",  # 6.1.176-1
    "6.1.0-56-amd64": "fixed",  # 6.1.192-2
    "6.12.107+deb12-amd64": "vulnerable",
    "6.12.117+deb12-amd64": "fixed",
}


def _real_modules() -> list[Path]:
    """SMCPATCH_TEST_MODULES_DIR, else the modules already in the integration tests' cache
    (Debian's shipped ones and our builds; none on a machine that never ran them)."""
    from conftest import cache_root_for_tests

    root = os.environ.get("SMCPATCH_TEST_MODULES_DIR")
    if not root:
        cache = cache_root_for_tests()
        found = sorted(cache.glob("shipped/*/smc.ko*")) + sorted(
            cache.glob("builds/*/out/*/smc.ko"))
        return found
    found: list[Path] = []
    for pattern in ("smc.ko", "smc.ko.xz", "smc.ko.zst", "smc.ko.gz"):
        found.extend(Path(root).rglob(pattern))
    return sorted(found)


@pytest.mark.parametrize(
    "module",
    _real_modules()
    or [pytest.param(None, marks=pytest.mark.skip(
        reason="no real modules yet: set SMCPATCH_TEST_MODULES_DIR or run the integration tests"))],
    ids=str,
)
def test_real_module(module: Path) -> None:
    t0 = time.perf_counter()
    info: ModuleInfo = inspect_module(module)
    elapsed = time.perf_counter() - t0
    ev = info.evidence
    assert info.name == "smc"
    assert info.vermagic
    assert ev.verdict in ("fixed", "vulnerable"), ev.reasons
    assert (ev.verdict == "vulnerable") == bool(ev.dst_ref_sites)
    release = info.vermagic.split(" ", 1)[0]
    assert check_vermagic(info, release)[0]
    if info.stripped and release in KNOWN_RELEASES:
        assert ev.verdict == KNOWN_RELEASES[release]
    if info.stripped:
        assert elapsed < 1.0, f"inspect took {elapsed:.2f}s"


# ---------------------------------------------------------------------------------------------
# The pyperf benchmark runs standalone
# ---------------------------------------------------------------------------------------------


def test_bench_inspect_smoke(objs: dict[str, Path], tmp_path: Path) -> None:
    import json
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_inspect.py"
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(script), "--module", str(objs["vuln_g"]), "--processes", "1",
           "--values", "1", "--warmups", "1", "--loops", "1", "--quiet", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    names = [b["metadata"]["name"] for b in json.loads(out.read_text())["benchmarks"]]
    assert names == ["inspect_module", "function_bodies"]


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
