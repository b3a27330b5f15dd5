"""Classify and variants on real Debian kernel trees (smcpatch.pipeline.classify)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smcpatch.pipeline.classify import Fix, classify, load_series
from smcpatch.pipeline.variants import make_variants
from tests.pipeline.test_classify import (
    DST_H_OLD,
    PATCHES,
    REAL_EXPECTED,
    SIBLINGS,
    _assert_canary,
    _c_function,
    _real_tree,
    _smc_digest,
    function_text,
    needs_patch,
)


@pytest.fixture(params=sorted(REAL_EXPECTED))
def real(request: pytest.FixtureRequest) -> tuple[str, Path]:
    ver: str = request.param
    return ver, _real_tree(ver)


@needs_patch
def test_real_tree_classify(fixes: list[Fix], real: tuple[str, Path]) -> None:
    ver, tree = real
    digest = _smc_digest(tree)
    [st] = classify(tree, fixes)
    assert st.state == REAL_EXPECTED[ver], st.detail
    assert st.variant.name == "main"
    assert _smc_digest(tree) == digest


@needs_patch
def test_real_tree_variants_and_canary(
    fixes: list[Fix], real: tuple[str, Path], tmp_path: Path
) -> None:
    ver, tree = real
    digest = _smc_digest(tree)
    v = make_variants(tree, classify(tree, fixes), tmp_path / "v")
    assert _smc_digest(tree) == digest
    after = function_text((v.after / "net/smc/smc_clc.c").read_text())
    before = function_text((v.before / "net/smc/smc_clc.c").read_text())
    assert "__sk_dst_get(clcsock->sk)" in after and "dst_release" not in after
    assert "= sk_dst_get(clcsock->sk)" in before and "dst_release(dst)" in before
    expected = "applied" if REAL_EXPECTED[ver] == "vulnerable" else "already-present"
    assert v.patch_action == expected
    # The fixed side is classified fixed, the vulnerable side vulnerable.
    for side, want in ((v.after, "fixed"), (v.before, "vulnerable")):
        probe_tree = tmp_path / f"probe-{side.name}"
        shutil.copytree(side, probe_tree)
        shutil.copytree(tree / "include", probe_tree / "include")
        [st] = classify(probe_tree, fixes)
        assert st.state == want, st.detail
    # The bench canary applies on the fixed side only (and lands in smc_clc_prfx_match).
    _assert_canary(v.after, applies=True)
    _assert_canary(v.before, applies=False)


@needs_patch
def test_real_tree_all_fixes(real: tuple[str, Path], tmp_path: Path) -> None:
    """All four fixes (main + siblings) classify as Debian has them; the variants carry
    exactly Debian's fixed / vulnerable function texts for the same minor series."""
    ver, tree = real
    everything = load_series(PATCHES, "all")
    states = classify(tree, everything)
    assert [(s.state, s.variant.name) for s in states] == [(REAL_EXPECTED[ver], "main")] * 4
    v = make_variants(tree, states, tmp_path / "v")
    series = ver.split(".")[0] + "." + ver.split(".")[1]
    ref = {
        want: _real_tree(other)
        for other, want in REAL_EXPECTED.items()
        if other.startswith(series + ".")
    }
    checks = {"CVE-2025-40168": ("net/smc/smc_clc.c", "smc_clc_prfx_match"), **SIBLINGS}
    for fid, (rel, fn) in checks.items():
        after = _c_function((v.after / rel).read_text(), fn)
        before = _c_function((v.before / rel).read_text(), fn)
        assert after == _c_function((ref["fixed"] / rel).read_text(), fn), fid
        assert before == _c_function((ref["vulnerable"] / rel).read_text(), fn), fid


@needs_patch
@pytest.mark.parametrize("fid", sorted(SIBLINGS))
def test_sibling_compat_variant_on_old_dst_h(
    fid: str, real: tuple[str, Path], tmp_path: Path
) -> None:
    """With dst_dev_rcu() hidden from dst.h the compat variant is chosen and applies."""
    ver, tree = real
    if REAL_EXPECTED[ver] != "vulnerable":
        pytest.skip("compat variants target vulnerable trees")
    copy = tmp_path / "t"
    shutil.copytree(tree / "net", copy / "net")
    inc_net = copy / "include" / "net"
    inc_net.mkdir(parents=True)
    (inc_net / "dst.h").write_text(DST_H_OLD)
    [fix] = load_series(PATCHES, [fid])
    [st] = classify(copy, [fix])
    assert (st.state, st.variant.name) == ("vulnerable", "compat")
    v = make_variants(copy, [st], tmp_path / "v")
    rel, fn = SIBLINGS[fid]
    after = _c_function((v.after / rel).read_text(), fn)
    assert "READ_ONCE(dst->dev)" in after and "dst_dev_rcu" not in after
