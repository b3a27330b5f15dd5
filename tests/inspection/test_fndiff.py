"""inspection.fndiff: the kpatch-style comparison of functions between two objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch import inspection
from smcpatch.inspection import changed_functions, function_bodies, same_function

FN = "smc_clc_prfx_match"


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

