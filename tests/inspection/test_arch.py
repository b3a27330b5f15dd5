"""inspection on AArch64 (little-endian) and s390x (big-endian) objects: the same verdict
principle as x86-64, read with each machine's byte order and relocation types.

Two sources of objects: minimal ELF files built here with :mod:`struct` (no tool needed), and
the smc_clc.c imitation of tests/elfobjs.py compiled with Debian's cross gcc (installed on
demand as root, skipped otherwise), which also carries DWARF, strings and .modinfo.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from smcpatch.inspection import (
    InspectError,
    changed_functions,
    function_bodies,
    inspect_module,
    same_function,
)
from smcpatch.inspection.disasm import instruction_stream
from smcpatch.inspection.elf import open_elf
from smcpatch.inspection.modcheck import read_modversions
from tests import elfobjs

FN = "smc_clc_prfx_match"

# (e_machine, byte order, call relocation type, its addend for "call foo", machine name)
MACHINE_ROWS = {
    "aarch64": (183, "<", 283, 0, "AArch64"),  # R_AARCH64_CALL26 (bl)
    "s390x": (22, ">", 20, 2, "S/390"),  # R_390_PLT32DBL (brasl: field 2 bytes in, addend 2)
}


def craft(arch: str, calls: list[str], *, stride: int = 8) -> bytes:
    """A minimal relocatable object: .text holding FN with one call relocation per name of
    ``calls`` (every ``stride`` bytes), and .symtab/.strtab/.rela.text/.shstrtab."""
    e_machine, order, rtype, addend, _ = MACHINE_ROWS[arch]
    text = b"\x07" * (stride * max(1, len(calls)))
    strtab = b"\0" + FN.encode() + b"\0" + b"".join(n.encode() + b"\0" for n in calls)
    name_at = {FN: 1}
    pos = 1 + len(FN) + 1
    for n in calls:
        name_at[n] = pos
        pos += len(n) + 1
    sym = struct.Struct(order + "IBBHQQ")
    # null; section symbol of .text (local); FN (global FUNC); the callees (global, undefined)
    symtab = sym.pack(0, 0, 0, 0, 0, 0) + sym.pack(0, 3, 0, 1, 0, 0)
    symtab += sym.pack(name_at[FN], (1 << 4) | 2, 0, 1, 0, len(text))
    for n in calls:
        symtab += sym.pack(name_at[n], (1 << 4) | 0, 0, 0, 0, 0)
    rela = b"".join(
        struct.pack(order + "QQq", i * stride + 2, ((3 + i) << 32) | rtype, addend)
        for i, _ in enumerate(calls)
    )
    names = [b"", b".text", b".symtab", b".strtab", b".rela.text", b".shstrtab"]
    shstrtab = b"\0"
    name_off = []
    for n in names:
        name_off.append(len(shstrtab) - 1 if not n else len(shstrtab))
        if n:
            shstrtab += n + b"\0"
    name_off[0] = 0
    blobs = [b"", text, symtab, strtab, rela, shstrtab]
    body = b""
    offsets = []
    for blob in blobs:
        while (64 + len(body)) % 8:
            body += b"\0"
        offsets.append(64 + len(body))
        body += blob
    while (64 + len(body)) % 8:
        body += b"\0"
    shoff = 64 + len(body)
    # (type, flags, link, info, entsize) per section
    meta = [(0, 0, 0, 0, 0), (1, 6, 0, 0, 0), (2, 0, 3, 3, 24), (3, 0, 0, 0, 0),
            (4, 0x40, 2, 1, 24), (3, 0, 0, 0, 0)]
    shdr = struct.Struct(order + "IIQQQQIIQQ")
    headers = b"".join(
        shdr.pack(name_off[i], t, fl, 0, offsets[i] if i else 0, len(blobs[i]), link, info,
                  8 if i else 0, ent)
        for i, (t, fl, link, info, ent) in enumerate(meta)
    )
    ident = b"\x7fELF" + bytes([2, 1 if order == "<" else 2, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack(order + "HHIQQQIHHHHHH", 1, e_machine, 1, 0, 0, shoff, 0, 64,
                               0, 0, 64, len(meta), 5)
    return ehdr + body + headers


@pytest.mark.parametrize("arch", sorted(MACHINE_ROWS))
@pytest.mark.parametrize(
    ("calls", "verdict"),
    [
        (["__rcu_read_lock", "dst_release", "__rcu_read_unlock"], "vulnerable"),
        (["__rcu_read_lock", "smc_clc_prfx_match4_rcu", "__rcu_read_unlock"], "fixed"),
        (["smc_clc_prfx_match4_rcu"], "unknown"),  # no CONFIG_PREEMPT_RCU, stripped
    ],
)
def test_crafted_objects(arch: str, calls: list[str], verdict: str, tmp_path: Path) -> None:
    path = tmp_path / "smc.ko"
    path.write_bytes(craft(arch, calls))
    ev = inspect_module(path).evidence
    assert ev.verdict == verdict, ev.reasons
    # the call's target is the callee itself (the PC bias undoes brasl's addend 2)
    assert [(c.offset, c.target) for c in ev.calls] == [
        (i * 8 + 2, n) for i, n in enumerate(calls)
    ]
    assert open_elf(path).machine.name == MACHINE_ROWS[arch][4]


def test_crafted_xz(tmp_path: Path) -> None:
    path = tmp_path / "smc.ko"
    path.write_bytes(craft("s390x", ["dst_release"]))
    assert inspect_module(elfobjs.xz_copy(path)).evidence.verdict == "vulnerable"


@pytest.mark.parametrize("arch", sorted(MACHINE_ROWS))
def test_crafted_byte_order_mismatch(arch: str, tmp_path: Path) -> None:
    """An AArch64 header in big-endian order, an S/390 one in little-endian: refused, named."""
    data = bytearray(craft(arch, ["dst_release"]))
    data[5] = 3 - data[5]
    path = tmp_path / "smc.ko"
    path.write_bytes(bytes(data))
    expected = {"aarch64": "big-endian ELF; expected a little-endian AArch64 object",
                "s390x": "little-endian ELF; expected a big-endian S/390 object"}[arch]
    with pytest.raises(InspectError, match=expected):
        inspect_module(path)


@pytest.mark.parametrize("arch", sorted(MACHINE_ROWS))
def test_crafted_code_comparison(arch: str, tmp_path: Path) -> None:
    """fndiff reads every machine's bodies: the relocated call fields are zeroed, so the same
    function with another callee differs and with the same one compares equal."""
    a, b, c = (tmp_path / name for name in ("a.ko", "b.ko", "c.ko"))
    a.write_bytes(craft(arch, ["dst_release"]))
    b.write_bytes(craft(arch, ["dst_release"]))
    c.write_bytes(craft(arch, ["__rcu_read_lock"]))
    assert list(function_bodies(a)) == [FN]
    assert same_function(a, b, FN) is True
    assert same_function(a, c, FN) is False
    info = inspect_module(a, dwarf_object=b)  # same body: its (absent) DWARF would be used
    assert info.evidence.verdict == "vulnerable"
    assert not any("differs from the module's" in r for r in info.evidence.reasons)


# -- real cross-compiled objects -----------------------------------------------------------------

VARIANTS = {
    "vuln_g": ((), True),
    "fixed_g": (("FIXED",), True),
    "vuln_nog": ((), False),
    "fixed_nog": (("FIXED",), False),
    "nolock": (("NOLOCK",), False),
    "modinfo": (("MODINFO",), False),
}


@pytest.fixture(scope="module", params=sorted(elfobjs.CROSS_GCC))
def cross(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[str, dict[str, Path]]:
    arch: str = request.param
    d = tmp_path_factory.mktemp(f"cross-{arch}")
    return arch, {
        name: elfobjs.compile_cross(d, arch, elfobjs.SMC_CLC_C, f"{name}.o", debug=g,
                                    defines=defs)
        for name, (defs, g) in VARIANTS.items()
    }


def test_cross_verdicts(cross: tuple[str, dict[str, Path]]) -> None:
    arch, objs = cross
    expect = {"vuln_g": "vulnerable", "fixed_g": "fixed", "vuln_nog": "vulnerable",
              "fixed_nog": "fixed", "nolock": "unknown", "modinfo": "vulnerable"}
    for name, verdict in expect.items():
        ev = inspect_module(objs[name]).evidence
        assert ev.verdict == verdict, (arch, name, ev.reasons)
    vuln = inspect_module(objs["vuln_nog"]).evidence
    assert [s.target for s in vuln.dst_ref_sites] == ["dst_release"]
    assert vuln.rcu_lock_sites and vuln.rcu_unlock_sites
    # strings reached through adrp/add (AArch64) or larl (s390x) resolve to their text
    assert any(c.target.endswith("'smc: no dst'") for c in vuln.calls), vuln.calls
    assert "smc_warn" in {c.target for c in vuln.calls}


def test_cross_changed_functions(cross: tuple[str, dict[str, Path]],
                                 tmp_path: Path) -> None:
    """Local calls (bl on AArch64, brasl on s390x) that moved with the code compare equal: only
    the function whose code changed is reported, by bytes and by the cross objdump's stream."""
    arch, objs = cross
    a = elfobjs.compile_cross(tmp_path, arch, elfobjs.CHANGES_C, "a.o", filename="changes.c")
    b = elfobjs.compile_cross(tmp_path, arch, elfobjs.CHANGES_C, "b.o", filename="changes.c",
                              defines=("VARIANT",))
    assert set(function_bodies(a)) == {"f_first", "f_second", "f_third"}
    assert changed_functions(a, b) == ["f_first"]
    assert same_function(a, b, "f_third") is True
    assert changed_functions(objs["vuln_g"], objs["fixed_g"])[0] == FN
    stream = instruction_stream(b, "f_third")
    call = {"aarch64": "bl\t<f_second>", "s390x": "brasl"}[arch]
    assert stream is not None and any(line.startswith(call) for line in stream), stream
    assert stream == instruction_stream(a, "f_third")


def test_cross_dwarf(cross: tuple[str, dict[str, Path]]) -> None:
    """The DWARF relocations are applied in the object's byte order."""
    _, objs = cross
    vuln = inspect_module(objs["vuln_g"]).evidence
    fixed = inspect_module(objs["fixed_g"]).evidence
    assert vuln.dwarf_inlined is not None and "sk_dst_get" in vuln.dwarf_inlined
    assert fixed.dwarf_inlined is not None
    assert {"__sk_dst_get", "dst_dev_rcu", "rcu_read_lock"} <= set(fixed.dwarf_inlined)


def test_cross_modinfo_and_versions(cross: tuple[str, dict[str, Path]]) -> None:
    _, objs = cross
    info = inspect_module(elfobjs.xz_copy(objs["modinfo"]))
    assert info.vermagic == "6.1.0-50-amd64 SMP preempt mod_unload modversions "
    assert info.srcversion == "0123456789ABCDEF012345"
    assert read_modversions(open_elf(objs["modinfo"])) == {
        "__rcu_read_lock": 0x1D24C881, "__rcu_read_unlock": 0x8D522714, "dst_release": 0xDEADBEEF
    }
