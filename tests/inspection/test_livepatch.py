"""A livepatch read and judged (smcpatch.inspection.livepatch) on small objects gcc makes here:
klp arrays shaped as the kernel's, around the fixed, vulnerable and unlocked function shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.inspection import livepatch
from tests.elfobjs import SMC_CLC_C, compile_c

KLP = r"""
struct klp_func { const char *old_name; void *new_func; unsigned long old_sympos;
                  void *pad[6]; };
struct klp_object { const char *name; struct klp_func *funcs; void *pad[8]; };
struct klp_patch { void *mod; struct klp_object *objs; void *pad[8]; };

static struct klp_func funcs[] = {
	{ .old_name = OLD_NAME, .new_func = smc_clc_prfx_match, },
	{ }
};
static struct klp_object objs[] = { { .name = OBJECT, .funcs = funcs, }, { } };
struct klp_patch patch = { .objs = objs, };
"""

MODINFO = r"""
static const char info[] __attribute__((section(".modinfo"), used)) =
	"name=livepatch_test\0vermagic=6.12.107+deb12-amd64 SMP preempt mod_unload modversions \0"
	LIVEPATCH;
"""


def _livepatch(tmp_path: Path, shape: str, old_name: str = "smc_clc_prfx_match",
               obj: str = "smc", flag: str = "livepatch=Y") -> Path:
    source = SMC_CLC_C + KLP + MODINFO
    defines = (f'OLD_NAME="{old_name}"', f'OBJECT="{obj}"', f'LIVEPATCH="{flag}"',
               *((shape,) if shape else ()))
    return compile_c(tmp_path, source, f"lp-{shape or 'VULN'}-{old_name}-{obj}.o",
                     defines=defines, debug=False)


def test_fixed_replacement_is_read_and_judged_fixed(tmp_path: Path) -> None:
    result = livepatch.judge_livepatch(_livepatch(tmp_path, "FIXED"))
    assert result.livepatch
    assert [(o.name, [(f.old_name, f.new_func) for f in o.funcs]) for o in result.objects] == [
        ("smc", [("smc_clc_prfx_match", "smc_clc_prfx_match")])]
    assert result.targets == ["smc:smc_clc_prfx_match"]
    assert result.verdict == "fixed", result.reasons
    assert result.objects[0].funcs[0].evidence["rcu_read_lock_sites"]


def test_vulnerable_replacement_is_vulnerable(tmp_path: Path) -> None:
    result = livepatch.judge_livepatch(_livepatch(tmp_path, ""))
    assert result.verdict == "vulnerable", result.reasons
    assert "dst_release" in " ".join(result.objects[0].funcs[0].reasons)


def test_replacement_without_rcu_lock_is_vulnerable_on_a_preemptible_kernel(
        tmp_path: Path) -> None:
    result = livepatch.judge_livepatch(_livepatch(tmp_path, "NOLOCK"))
    assert result.verdict == "vulnerable", result.reasons
    assert "no RCU read lock" in result.objects[0].funcs[0].reasons[-1]


@pytest.mark.parametrize(("old_name", "obj"), [("smc_clc_prfx_set", "smc"),
                                               ("smc_clc_prfx_match", "tls")])
def test_a_target_this_fix_does_not_change_is_not_fixed(tmp_path: Path, old_name: str,
                                                        obj: str) -> None:
    result = livepatch.judge_livepatch(_livepatch(tmp_path, "FIXED", old_name, obj))
    assert result.verdict == "unknown"
    assert f"it replaces {obj}:{old_name}, which this fix does not change" in result.reasons


def test_without_the_modinfo_flag_it_is_no_livepatch(tmp_path: Path) -> None:
    module = _livepatch(tmp_path, "FIXED", flag="license=GPL")
    assert not livepatch.is_livepatch(module)
    result = livepatch.judge_livepatch(module)
    assert result.verdict == "unknown"
    assert "not a livepatch" in result.reasons[0]


TWO_OBJECTS = r"""
struct klp_func { const char *old_name; void *new_func; unsigned long old_sympos;
                  void *pad[6]; };
struct klp_object { const char *name; struct klp_func *funcs; void *pad[8]; };
struct klp_patch { void *mod; struct klp_object *objs; void *pad[8]; };

static struct klp_func smc_funcs[] = {
	{ .old_name = "smc_clc_prfx_match", .new_func = smc_clc_prfx_match, }, { }
};
static struct klp_func tls_funcs[] = {
	{ .old_name = "get_netdev_for_sock", .new_func = smc_clc_prfx_match, }, { }
};
static struct klp_object objs[] = {
	{ .name = "smc", .funcs = smc_funcs, }, { .name = "tls", .funcs = tls_funcs, }, { }
};
struct klp_patch patch = { .objs = objs, };
"""


def test_each_object_gets_only_its_own_functions(tmp_path: Path) -> None:
    module = compile_c(tmp_path, SMC_CLC_C + TWO_OBJECTS + MODINFO, "two.o",
                       defines=("FIXED", 'LIVEPATCH="livepatch=Y"'), debug=False)
    result = livepatch.judge_livepatch(module)
    assert result.targets == ["smc:smc_clc_prfx_match", "tls:get_netdev_for_sock"]
    assert result.verdict == "unknown"  # tls is not this fix's
