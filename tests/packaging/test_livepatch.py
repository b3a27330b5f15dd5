"""The livepatch source generator (smcpatch.packaging.livepatch): functions found in C by their
braces, the static helpers a fix reaches, the klp structures, the exported-symbol check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.packaging import livepatch
from tests.elfobjs import require_gcc

C_FILE = r"""
// SPDX-License-Identifier: GPL-2.0
#include <linux/in.h>
#include "smc.h"

#define SMC_CLC_RECV_BUF_LEN	100
#define LONG_ONE(x) \
	((x) + 1)

static const char *names[] = { "a}", "{b" };	/* braces in strings: { */

struct smc_thing {
	int x;
};

static int helper_b(int v)
{
	return v * 2;	/* } a brace in a comment */
}

static int helper_a(int v)
{
	char c = '}';

	return helper_b(v) + c;
}

static int unused_helper(void)
{
	return 7;
}

int other_global(int v)
{
	return unused_helper() + v;
}

int smc_clc_prfx_match(struct socket *clcsock,
			struct smc_clc_msg_proposal_prefix *prop)
{
	int rc;

	rcu_read_lock();
	rc = helper_a(prop->ipv6_prefixes_cnt);
	rcu_read_unlock();
	return rc;
}
EXPORT_SYMBOL_GPL(other_global);
"""


def test_blank_keeps_offsets_and_hides_braces() -> None:
    masked = livepatch.blank(C_FILE)
    assert len(masked) == len(C_FILE)
    assert masked.count("\n") == C_FILE.count("\n")
    assert "a}" not in masked and "brace in a comment" not in masked
    assert "'}'" not in masked


def test_definitions_finds_functions_not_structs_or_initializers() -> None:
    defs = livepatch.definitions(C_FILE)
    assert list(defs) == ["helper_b", "helper_a", "unused_helper", "other_global",
                          "smc_clc_prfx_match"]
    assert defs["helper_b"].static and not defs["smc_clc_prfx_match"].static
    assert defs["smc_clc_prfx_match"].text.startswith("int smc_clc_prfx_match(struct socket")
    assert defs["smc_clc_prfx_match"].text.rstrip().endswith("return rc;\n}")
    assert "brace in a comment" in defs["helper_b"].text  # the source itself, comments kept


def test_needed_follows_static_calls_only() -> None:
    defs = livepatch.definitions(C_FILE)
    assert livepatch.needed(defs, ["smc_clc_prfx_match"]) == [
        "helper_b", "helper_a", "smc_clc_prfx_match"]
    # a global function is never copied: it would be a second definition of smc.ko's own
    assert livepatch.needed(defs, ["other_global"]) == ["unused_helper", "other_global"]


def test_generate_renames_the_replacement_and_registers_it() -> None:
    text = livepatch.generate(C_FILE, ["smc_clc_prfx_match"])
    assert "static int livepatch_smc_clc_prfx_match(struct socket *clcsock," in text
    assert "\nint smc_clc_prfx_match(" not in text
    assert '.old_name = "smc_clc_prfx_match",' in text
    assert ".new_func = livepatch_smc_clc_prfx_match," in text
    assert '.name = "smc",' in text
    assert 'MODULE_INFO(livepatch, "Y");' in text
    assert "klp_enable_patch(&patch)" in text
    assert '#include "smc.h"' in text and "#include <linux/livepatch.h>" in text
    assert "#define SMC_CLC_RECV_BUF_LEN\t100" in text
    assert "LONG_ONE" not in text  # multi-line macros are left out
    assert "unused_helper" not in text and "other_global" not in text
    assert text.index("static int helper_b") < text.index("static int helper_a")


def test_generate_refuses_a_function_the_file_lacks() -> None:
    with pytest.raises(BadInput, match="smc_clc_prfx_set is not defined"):
        livepatch.generate(C_FILE, ["smc_clc_prfx_set"])


def test_write_sources_copies_the_headers(tmp_path: Path) -> None:
    smc = tmp_path / "smc"
    smc.mkdir()
    (smc / "smc_clc.c").write_text(C_FILE)
    (smc / "smc.h").write_text("/* header */\n")
    (smc / "smc_core.c").write_text("int x;\n")
    c_file = livepatch.write_sources(smc, tmp_path / "work", ["smc_clc_prfx_match"], "test")
    work = tmp_path / "work"
    assert sorted(p.name for p in work.iterdir()) == [
        "Kbuild", "livepatch_smc_cve_2025_40168.c", "smc.h"]
    assert (work / "Kbuild").read_text() == "obj-m := livepatch_smc_cve_2025_40168.o\n"
    assert "made by smcpatch from test" in c_file.read_text()


def _symvers(path: Path) -> Path:
    path.write_text("0x1\t__rcu_read_lock\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
                    "0x2\tklp_enable_patch\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
                    "0x3\tsmc_proto\tnet/smc/smc\tEXPORT_SYMBOL_GPL\t\n")
    return path


def test_exported_symbols_pass(tmp_path: Path) -> None:
    livepatch.check_exported(["__rcu_read_lock", "klp_enable_patch"],
                             _symvers(tmp_path / "Module.symvers"), ["smc_clc_prfx_match"])


def test_unexported_or_module_symbols_are_refused(tmp_path: Path) -> None:
    symvers = _symvers(tmp_path / "Module.symvers")
    with pytest.raises(BadInput, match=r"needs smc_ib_find_route, smc_proto, which the kernel"):
        livepatch.check_exported(["__rcu_read_lock", "smc_ib_find_route", "smc_proto"],
                                 symvers, ["smc_clc_prfx_match"])


def _object(tmp_path: Path, source: str, flags: list[str]) -> Path:
    gcc = require_gcc()
    src = tmp_path / "m.c"
    src.write_text(source)
    out = tmp_path / f"m{len(flags)}.o"
    subprocess.run([gcc, "-c", "-O2", "-fno-pie", *flags, "-o", str(out), str(src)], check=True)
    return out


FTRACED = "int smc_clc_prfx_match(int *p) { return p ? *p + 1 : -19; }\n"


def test_shipped_function_with_fentry_passes(tmp_path: Path) -> None:
    livepatch.shipped_function_check(_object(tmp_path, FTRACED, ["-pg", "-mfentry"]),
                                     "smc_clc_prfx_match")


def test_shipped_function_without_fentry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no __fentry__ call"):
        livepatch.shipped_function_check(_object(tmp_path, FTRACED, []), "smc_clc_prfx_match")


def test_shipped_function_inlined_is_refused(tmp_path: Path) -> None:
    inlined = ("static inline int smc_clc_prfx_match(int *p) { return p ? *p : 0; }\n"
               "int caller(int *p) { return smc_clc_prfx_match(p) + 1; }\n")
    with pytest.raises(BadInput, match="inlined it"):
        livepatch.shipped_function_check(_object(tmp_path, inlined, ["-pg", "-mfentry", "-g0"]),
                                         "smc_clc_prfx_match")
