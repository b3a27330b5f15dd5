"""Tests of the classify and variants stages (smcpatch.pipeline.classify).

Two kinds of trees:
- synthetic ones built in tmp_path from verbatim excerpts of the real smc_clc.c
  (tests/data/smc_clc_{vulnerable,fixed}.c) plus a tiny dst.h with or without dst_dev_rcu();
- real Debian trees: the matrix kernels' sources fetched into the test cache (integration
  tests), or SMCPATCH_TEST_TREES=<dir holding <ver>/ trees> to use trees you already have,
  where a tree is <dir>/<ver>/src/linux-source-*/ (or <dir>/<ver>/ itself).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch.data import CANARY_PATCH, DEFAULT_PATCHES
from smcpatch.errors import ConfigError, PatchError, ToolMissing
from smcpatch.pipeline.classify import Fix, FixState, choose_variant, classify, load_series
from smcpatch.pipeline.variants import make_variants
from tests import synthetic
from tests.conftest import real_workspace
from tests.faults import (
    KERNEL,
    _break_patch_body,
    _break_series_missing_file,
    _break_series_syntax,
    _patches_copy,
    assert_one_line_error,
    inv,
)

PATCHES = DEFAULT_PATCHES


CANARY = CANARY_PATCH


DATA = synthetic.data_dir()  # made from our patch: no kernel code in the repo


VULNERABLE_C = DATA / "smc_clc_vulnerable.c"


FIXED_C = DATA / "smc_clc_fixed.c"


DST_H_NEW = """\
/* synthetic include/net/dst.h for smcpatch tests */
struct dst_entry {
	struct net_device *dev;
};

static inline struct net_device *dst_dev_rcu(const struct dst_entry *dst)
{
	return READ_ONCE(dst->dev);
}
"""


DST_H_OLD = """\
/* synthetic include/net/dst.h for smcpatch tests (no dst_dev_rcu) */
struct dst_entry {
	struct net_device *dev;
};
"""


needs_patch = pytest.mark.usefixtures("gnu_patch")  # installed on a fresh machine, as the tool does


def tree_digest(root: Path) -> str:
    """Content, mode and mtime of every file under root: proves a tree was not touched."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)} {st.st_mode} {st.st_mtime_ns}\n".encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def function_text(source: str, name: str = "smc_clc_prfx_match") -> str:
    """The body of the C function `name` (from its signature to the closing brace)."""
    m = re.search(rf"^int {name}\(.*?^}}$", source, re.S | re.M)
    assert m, f"{name} not found"
    return m.group(0)


def make_tree(
    root: Path, clc: str | None, *, dst_h: str | None = DST_H_NEW, extra: bool = True
) -> Path:
    smc = root / "net" / "smc"
    smc.mkdir(parents=True)
    if clc is not None:
        (smc / "smc_clc.c").write_text(clc)
    if extra:
        (smc / "af_smc.c").write_text("/* an untouched file */\nint smc_dummy;\n")
        (smc / "Makefile").write_text("obj-$(CONFIG_SMC) += smc.o\n")
        old = 1_600_000_000
        for p in smc.iterdir():
            os.utime(p, (old, old))
    if dst_h is not None:
        (root / "include" / "net").mkdir(parents=True)
        (root / "include" / "net" / "dst.h").write_text(dst_h)
    return root


@pytest.fixture
def vulnerable_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "vuln", VULNERABLE_C.read_text())


@pytest.fixture
def fixed_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "fixed", FIXED_C.read_text())


@pytest.fixture
def half_tree(tmp_path: Path) -> Path:
    """The vulnerable function with one line of the hunk altered: neither applies nor reverts."""
    text = VULNERABLE_C.read_text()
    assert "\t\trc = -ENOTCONN;\n" in text
    return make_tree(tmp_path / "half", text.replace("\t\trc = -ENOTCONN;\n", "\t\trc = -EIO;\n"))


def _series_dir(tmp_path: Path, series: str, patches: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "patches"
    d.mkdir()
    for name in patches:
        shutil.copy(PATCHES / name, d / name)
    (d / "series").write_text(series)
    return d


GOOD = """\
fix CVE-2025-40168 title words
  function smc_clc_prfx_match
  file net/smc/smc_clc.c
  variant main 0001-smc-clc-prfx-match-rcu.patch requires include/net/dst.h:dst_dev_rcu
  variant compat 0001-smc-clc-prfx-match-rcu-compat.patch fallback
"""


BOTH = ("0001-smc-clc-prfx-match-rcu.patch", "0001-smc-clc-prfx-match-rcu-compat.patch")


REAL_EXPECTED = {
    "6.1.176-1": "vulnerable",
    "6.1.192-2": "fixed",
    "6.12.107-1~deb12u1": "vulnerable",
    "6.12.117-1~deb12u1": "fixed",
}


def _real_tree(ver: str) -> Path:
    root = os.environ.get("SMCPATCH_TEST_TREES")
    if not root:  # the real Debian source, fetched into the test cache
        return real_workspace(ver).source_tree
    base = Path(root) / ver
    candidates = [base] if (base / "net/smc").is_dir() else []
    candidates += sorted(p for p in base.glob("src/linux-source-*") if (p / "net/smc").is_dir())
    if not candidates:
        pytest.skip(f"no tree for {ver} under {root}")
    return candidates[0]


def _smc_digest(tree: Path) -> str:
    return tree_digest(tree / "net/smc") + tree_digest(tree / "include/net")


def _patch_dry(side: Path, patch: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "patch",
            "-p1",
            "--batch",
            "-N",
            "--fuzz=0",
            "--dry-run",
            "-d",
            str(side),
            "-i",
            str(patch),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    )


def _assert_canary(side: Path, *, applies: bool) -> None:
    r = _patch_dry(side, CANARY)
    assert (r.returncode == 0) == applies, r.stdout + r.stderr


SIBLINGS = {
    "CVE-2025-40139": ("net/smc/smc_clc.c", "smc_clc_prfx_set"),
    "CVE-2025-40064": ("net/smc/smc_pnet.c", "smc_pnet_find_roce_resource"),
    "smc_vlan_by_tcpsk-0b0e4d51c655": ("net/smc/smc_core.c", "smc_vlan_by_tcpsk"),
}


def _c_function(source: str, name: str) -> str:
    m = re.search(rf"^(?:static )?[\w \*]+?\b{name}\([^;{{]*?\)\n\{{.*?^\}}\n", source, re.M | re.S)
    assert m, f"{name} not found"
    return m.group(0)


def test_load_series_real_patches(fixes: list[Fix]) -> None:
    assert [f.id for f in fixes][0] == "CVE-2025-40168"
    fix = fixes[0]
    assert [v.name for v in fix.variants] == ["main", "compat"]
    main, compat = fix.variants
    assert main.functions == ("smc_clc_prfx_match",)
    assert main.files == ("net/smc/smc_clc.c",)
    assert main.requires == (("include/net/dst.h", "dst_dev_rcu"),)
    assert compat.is_fallback
    assert main.path.is_file() and main.path.is_absolute()
    assert all(v.fix_id == fix.id for v in fix.variants)


def test_series_select() -> None:
    assert [f.id for f in load_series(PATCHES)] == ["CVE-2025-40168"]
    everything = load_series(PATCHES, "all")
    assert [f.id for f in everything] == [
        "CVE-2025-40168",
        "CVE-2025-40139",
        "CVE-2025-40064",
        "smc_vlan_by_tcpsk-0b0e4d51c655",
    ]
    assert [f.default for f in everything] == [True, False, False, False]
    assert [f.id for f in load_series(PATCHES, ["CVE-2025-40064"])] == ["CVE-2025-40064"]
    assert [f.id for f in load_series(PATCHES, "CVE-2025-40139")] == ["CVE-2025-40139"]
    with pytest.raises(ConfigError, match="no fix with id CVE-0000-1"):
        load_series(PATCHES, ["CVE-0000-1"])


def test_every_patch_is_in_the_series() -> None:
    listed = {v.path.name for f in load_series(PATCHES, "all") for v in f.variants}
    assert listed == {p.name for p in PATCHES.glob("*.patch")}


def test_patch_headers_credit_upstream() -> None:
    for name in ("0001-smc-clc-prfx-match-rcu.patch", "0001-smc-clc-prfx-match-rcu-compat.patch"):
        text = (PATCHES / name).read_text()
        assert "235f81045c00" in text
        assert "Fixes: a046d57da19f" in text
        assert "--- a/net/smc/smc_clc.c" in text and "+++ b/net/smc/smc_clc.c" in text
    compat = (PATCHES / "0001-smc-clc-prfx-match-rcu-compat.patch").read_text()
    assert "+\tdev = dst ? READ_ONCE(dst->dev) : NULL;" in compat
    assert "+\tdev = dst ? dst_dev_rcu(dst)" not in compat


def test_series_minimal_copy_parses(tmp_path: Path) -> None:
    fixes = load_series(_series_dir(tmp_path, GOOD, BOTH))
    assert len(fixes) == 1 and fixes[0].title == "title words"


def test_series_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ConfigError, match="series not found"):
        load_series(empty)


def test_series_missing_patch_file(tmp_path: Path) -> None:
    d = _series_dir(tmp_path, GOOD, BOTH[:1])
    with pytest.raises(ConfigError, match=r"series:5: patch file not found"):
        load_series(d)


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (GOOD + "frobnicate yes\n", r"series:6: unknown keyword 'frobnicate'"),
        ("function smc_clc_prfx_match\n" + GOOD, r"series:1: 'function' line before any 'fix'"),
        ("fix CVE-1\n", r"series:1: expected 'fix <ID> <title>'"),
        ("fix bad/id title\n", r"bad fix id"),
        (GOOD + GOOD, r"duplicate fix id"),
        (GOOD.replace("fallback", "requires nocolon"), r"bad requirement 'nocolon'"),
        (GOOD.replace("fallback", "whenever"), r"probe must be"),
        (GOOD + "  default maybe\n", r"expected 'default yes' or 'default no'"),
        (GOOD.replace("  file net/smc/smc_clc.c\n", ""), r"has no 'file' line"),
        (GOOD.replace("  function smc_clc_prfx_match\n", ""), r"has no 'function' line"),
        (GOOD.split("  variant")[0], r"has no 'variant' line"),
        (GOOD.replace("net/smc/smc_clc.c", "net/smc/smc_core.c"), r"changes net/smc/smc_clc.c"),
        (GOOD.replace("net/smc/smc_clc.c", "../etc/passwd"), r"expected 'file <relative path>"),
        (GOOD + "  variant late 0001-smc-clc-prfx-match-rcu.patch fallback\n", r"after a fallback"),
        ("# only comments\n\n", r"no fixes defined"),
    ],
)
def test_series_bad_lines(tmp_path: Path, series: str, message: str) -> None:
    d = _series_dir(tmp_path, series, BOTH)
    with pytest.raises(ConfigError, match=message):
        load_series(d)


def test_series_patch_without_hunks(tmp_path: Path) -> None:
    d = _series_dir(tmp_path, GOOD, BOTH)
    (d / BOTH[1]).write_text("just prose, no diff\n")
    with pytest.raises(ConfigError, match="no unified diff hunks"):
        load_series(d)


def test_choose_main_when_dst_dev_rcu_present(fixes: list[Fix], vulnerable_tree: Path) -> None:
    assert choose_variant(fixes[0], vulnerable_tree).name == "main"


def test_choose_compat_when_dst_h_lacks_dst_dev_rcu(fixes: list[Fix], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "old", VULNERABLE_C.read_text(), dst_h=DST_H_OLD)
    assert choose_variant(fixes[0], tree).name == "compat"


def test_choose_variant_needs_probe_file(fixes: list[Fix], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "nodst", VULNERABLE_C.read_text(), dst_h=None)
    with pytest.raises(PatchError, match=r"include/net/dst.h missing"):
        choose_variant(fixes[0], tree)


def test_choose_variant_without_fallback(tmp_path: Path) -> None:
    main_only = "".join(GOOD.splitlines(keepends=True)[:4])
    d = _series_dir(tmp_path, main_only, BOTH[:1])
    fix = load_series(d)[0]
    tree = make_tree(tmp_path / "old", VULNERABLE_C.read_text(), dst_h=DST_H_OLD)
    with pytest.raises(PatchError, match="no patch variant fits"):
        choose_variant(fix, tree)


@needs_patch
def test_classify_vulnerable(fixes: list[Fix], vulnerable_tree: Path) -> None:
    before = tree_digest(vulnerable_tree)
    [st] = classify(vulnerable_tree, fixes)
    assert (st.fix_id, st.state, st.variant.name) == ("CVE-2025-40168", "vulnerable", "main")
    assert tree_digest(vulnerable_tree) == before


@needs_patch
def test_classify_fixed(fixes: list[Fix], fixed_tree: Path) -> None:
    before = tree_digest(fixed_tree)
    [st] = classify(fixed_tree, fixes)
    assert (st.state, st.variant.name) == ("fixed", "main")
    assert tree_digest(fixed_tree) == before


@needs_patch
def test_classify_unknown_names_rejected_hunk(fixes: list[Fix], half_tree: Path) -> None:
    before = tree_digest(half_tree)
    [st] = classify(half_tree, fixes)
    assert st.state == "unknown"
    assert "net/smc/smc_clc.c hunk #1 in smc_clc_prfx_match() rejected" in st.detail
    assert "forward:" in st.detail and "reverse:" in st.detail
    assert "\n" not in st.detail
    assert tree_digest(half_tree) == before
    assert not list(half_tree.rglob("*.rej")) and not list(half_tree.rglob("*.orig"))


@needs_patch
def test_classify_compat_vulnerable_on_old_dst_h(fixes: list[Fix], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "old", VULNERABLE_C.read_text(), dst_h=DST_H_OLD)
    [st] = classify(tree, fixes)
    assert (st.state, st.variant.name) == ("vulnerable", "compat")


@needs_patch
def test_classify_tree_fixed_by_compat_variant(fixes: list[Fix], tmp_path: Path) -> None:
    """dst.h has dst_dev_rcu (main preferred) but the tree carries our compat form."""
    tree = make_tree(tmp_path / "c", VULNERABLE_C.read_text())
    compat = fixes[0].variants[1].path
    subprocess.run(
        ["patch", "-p1", "--batch", "-N", "-s", "-d", str(tree), "-i", str(compat)], check=True
    )
    [st] = classify(tree, fixes)
    assert (st.state, st.variant.name) == ("fixed", "compat")


@needs_patch
def test_classify_missing_file_is_unknown(fixes: list[Fix], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "empty", None)
    [st] = classify(tree, fixes)
    assert st.state == "unknown" and "net/smc/smc_clc.c" in st.detail


def test_classify_without_patch_tool(
    fixes: list[Fix], vulnerable_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolMissing, match="apt-get install patch"):
        classify(vulnerable_tree, fixes)


@needs_patch
def test_make_variants_vulnerable(fixes: list[Fix], vulnerable_tree: Path, tmp_path: Path) -> None:
    digest = tree_digest(vulnerable_tree)
    states = classify(vulnerable_tree, fixes)
    dest = tmp_path / "out" / "variants"
    v = make_variants(vulnerable_tree, states, dest)
    assert tree_digest(vulnerable_tree) == digest

    assert v.patch_action == "applied"
    assert v.before == dest / "before" and v.after == dest / "after"
    after = function_text((v.after / "net/smc/smc_clc.c").read_text())
    before = function_text((v.before / "net/smc/smc_clc.c").read_text())
    assert "__sk_dst_get(clcsock->sk)" in after and "dst_dev_rcu(dst)" in after
    assert "dst_release" not in after
    assert "sk_dst_get(clcsock->sk)" in before and "__sk_dst_get" not in before
    assert (v.before / "net/smc/smc_clc.c").read_bytes() == VULNERABLE_C.read_bytes()
    assert any("applied variant main" in n for n in v.notes)

    # Only net/smc is copied; untouched files keep the vendor mtime on both sides.
    assert sorted(p.name for p in (dest / "before").iterdir()) == ["net"]
    for name in ("af_smc.c", "Makefile"):
        vendor = (vulnerable_tree / "net/smc" / name).stat().st_mtime_ns
        assert (v.before / "net/smc" / name).stat().st_mtime_ns == vendor
        assert (v.after / "net/smc" / name).stat().st_mtime_ns == vendor
    b = (v.before / "net/smc/smc_clc.c").stat().st_mtime_ns
    a = (v.after / "net/smc/smc_clc.c").stat().st_mtime_ns
    assert b == (vulnerable_tree / "net/smc/smc_clc.c").stat().st_mtime_ns
    assert a > b
    # No temp dirs left beside dest.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["variants"]


@needs_patch
def test_make_variants_fixed_reverts_for_before(
    fixes: list[Fix], fixed_tree: Path, tmp_path: Path
) -> None:
    digest = tree_digest(fixed_tree)
    v = make_variants(fixed_tree, classify(fixed_tree, fixes), tmp_path / "v")
    assert tree_digest(fixed_tree) == digest
    assert v.patch_action == "already-present"
    assert any("reverted-for-before" in n for n in v.notes)
    assert (v.after / "net/smc/smc_clc.c").read_bytes() == FIXED_C.read_bytes()
    before = function_text((v.before / "net/smc/smc_clc.c").read_text())
    assert "sk_dst_get(clcsock->sk)" in before and "dst_release(dst)" in before
    assert "__sk_dst_get" not in before
    assert (v.before / "net/smc/smc_clc.c").stat().st_mtime_ns > (
        v.after / "net/smc/smc_clc.c"
    ).stat().st_mtime_ns


@needs_patch
def test_make_variants_compat(fixes: list[Fix], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "old", VULNERABLE_C.read_text(), dst_h=DST_H_OLD)
    v = make_variants(tree, classify(tree, fixes), tmp_path / "v")
    after = function_text((v.after / "net/smc/smc_clc.c").read_text())
    assert "dev = dst ? READ_ONCE(dst->dev) : NULL;" in after
    assert "__sk_dst_get(clcsock->sk)" in after


@needs_patch
def test_make_variants_unknown_raises(fixes: list[Fix], half_tree: Path, tmp_path: Path) -> None:
    states = classify(half_tree, fixes)
    dest = tmp_path / "v"
    with pytest.raises(PatchError, match=r"hunk #1 in smc_clc_prfx_match\(\) rejected") as ei:
        make_variants(half_tree, states, dest)
    assert "\n" not in ei.value.one_line()
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir


@needs_patch
def test_make_variants_failure_cleans_up(
    fixes: list[Fix], vulnerable_tree: Path, tmp_path: Path
) -> None:
    """A state that lies (says fixed on a vulnerable tree) fails while patching; no debris."""
    [st] = classify(vulnerable_tree, fixes)
    lie = FixState(st.fix_id, "fixed", st.variant, st.detail)
    with pytest.raises(PatchError, match="no longer reverts"):
        make_variants(vulnerable_tree, [lie], tmp_path / "out" / "v")
    assert list((tmp_path / "out").iterdir()) == []


@needs_patch
def test_make_variants_reuses_complete_dest(
    fixes: list[Fix], vulnerable_tree: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "v"
    states = classify(vulnerable_tree, fixes)
    first = make_variants(vulnerable_tree, states, dest)
    sentinel = dest / "after" / "net" / "smc" / "smc_clc.o"
    sentinel.write_text("object from an earlier build")
    marker = dest / ".smcpatch-variants.json"
    stamp = marker.stat().st_mtime_ns
    second = make_variants(vulnerable_tree, states, dest)
    assert second == first
    assert sentinel.exists() and marker.stat().st_mtime_ns == stamp

    # Changed input (a vendor file) → rebuilt from scratch.
    (vulnerable_tree / "net/smc/af_smc.c").write_text("/* changed */\n")
    third = make_variants(vulnerable_tree, classify(vulnerable_tree, fixes), dest)
    assert third.patch_action == "applied"
    assert not sentinel.exists()
    assert (dest / "before/net/smc/af_smc.c").read_text() == "/* changed */\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@needs_patch
def test_make_variants_incomplete_dest_is_rebuilt(
    fixes: list[Fix], vulnerable_tree: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "v"
    (dest / "before").mkdir(parents=True)  # e.g. left by a crashed older version
    v = make_variants(vulnerable_tree, classify(vulnerable_tree, fixes), dest)
    assert (v.after / "net/smc/smc_clc.c").is_file()
    assert (dest / ".smcpatch-variants.json").is_file()


@needs_patch
def test_canary_on_synthetic_fixed_function(tmp_path: Path) -> None:
    """The canary's function hunk applies to the fixed excerpt (the include hunk needs the
    real file head, so only hunk #2 is checked here) and puts udelay() in prfx_match."""
    tree = make_tree(tmp_path / "t", FIXED_C.read_text())
    r = _patch_dry(tree, CANARY)
    assert "Hunk #1 FAILED" in r.stdout and "Hunk #2 FAILED" not in r.stdout


@pytest.mark.parametrize("breaker", [_break_series_syntax, _break_series_missing_file,
                                     _break_patch_body])
def test_broken_patches_dir_is_one_line_error(tmp_path: Path,
                                              breaker: Callable[[Path], str]) -> None:
    patches = _patches_copy(tmp_path)
    message = breaker(patches)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"), "--patches",
               str(patches))
    assert_one_line_error(proc, message)
    assert not (tmp_path / "cache" / "debs").exists()  # refused before fetching anything
