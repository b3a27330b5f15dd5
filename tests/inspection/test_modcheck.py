"""inspection.modcheck: .modinfo, vermagic, __versions against Module.symvers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from smcpatch.inspection import (
    InspectError,
    check_modversions,
    check_vermagic,
    inspect_module,
    read_module_symvers,
)


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

