"""inspection.fixes and the per-fix verdicts: every signature of data/fixes judged on small
objects gcc compiles here, shaped like the kernel's code: each changed function in its
vulnerable form (sk_dst_get inlined: a dst reference taken and dropped) or its fixed form
(__sk_dst_get/dst_dev_rcu under rcu_read_lock), with or without CONFIG_PREEMPT_RCU's
__rcu_read_lock call, with or without DWARF, and with the static helpers inlined into their
callers or kept out of line (as Debian's builds of each arch differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.errors import ConfigError, InspectError
from smcpatch.inspection import inspect_module
from smcpatch.inspection.fixes import fixes_for_module, load_fixes, modules
from tests import elfobjs
from tests.faults import inv
from tests.schemas import assert_valid

COMMON_C = r"""
struct net_device { int ifindex; };
struct dst_entry { struct net_device *dev; int refcnt; };
struct sock { struct dst_entry *sk_dst_cache; };
struct socket { struct sock *sk; };

extern void __rcu_read_lock(void);
extern void __rcu_read_unlock(void);
extern void dst_release(struct dst_entry *dst);
extern int use_dev(struct net_device *dev, int what);

#ifdef PREEMPT_RCU
static inline void rcu_read_lock(void) { __rcu_read_lock(); }
static inline void rcu_read_unlock(void) { __rcu_read_unlock(); }
#define VERMAGIC "vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions "
#else  /* TREE_RCU (arm64, s390x, 5.10): the read-side section leaves no call */
static inline void rcu_read_lock(void) { __asm__ volatile("" ::: "memory"); }
static inline void rcu_read_unlock(void) { __asm__ volatile("" ::: "memory"); }
#define VERMAGIC "vermagic=6.1.0-50-arm64 SMP mod_unload modversions aarch64"
#endif

static inline struct dst_entry *sk_dst_get(const struct sock *sk)
{
	struct dst_entry *dst;

	rcu_read_lock();
	dst = *(struct dst_entry *volatile *)&sk->sk_dst_cache;
	if (dst && !__atomic_add_fetch(&dst->refcnt, 1, __ATOMIC_RELAXED))
		dst = 0;
	rcu_read_unlock();
	return dst;
}

static inline struct dst_entry *__sk_dst_get(const struct sock *sk)
{
	return *(struct dst_entry *volatile *)&sk->sk_dst_cache;
}

static inline struct net_device *dst_dev_rcu(const struct dst_entry *dst)
{
	return *(struct net_device *volatile *)&dst->dev;
}

/* the two shapes every fix of the series changes one into the other */
static inline __attribute__((always_inline)) int vulnerable_lookup(struct sock *sk, int what)
{
	struct dst_entry *dst = sk_dst_get(sk);
	int rc = -19;

	if (dst) {
		if (dst->dev)
			rc = use_dev(dst->dev, what);
		dst_release(dst);
	}
	return rc;
}

static inline __attribute__((always_inline)) int fixed_lookup(struct sock *sk, int what)
{
	struct net_device *dev;
	struct dst_entry *dst;
	int rc = -19;

	rcu_read_lock();
	dst = __sk_dst_get(sk);
	dev = dst ? dst_dev_rcu(dst) : 0;
	if (dev)
		rc = use_dev(dev, what);
	rcu_read_unlock();
	return rc;
}

#define LOOKUP(fixed, sk, what) ((fixed) ? fixed_lookup(sk, what) : vulnerable_lookup(sk, what))
#ifdef FIXED
#define ALL_FIXED 1
#else
#define ALL_FIXED 0
#endif
#ifndef FIXED_SET
#define FIXED_SET ALL_FIXED
#endif
"""

SMC_C = COMMON_C + r"""
#ifdef INLINE_SET
#define SET_INLINE static inline __attribute__((always_inline))
#else
#define SET_INLINE static __attribute__((noinline))
#endif

int smc_clc_prfx_match(struct socket *clcsock, int prop)
{
	return LOOKUP(ALL_FIXED, clcsock->sk, prop + 1);
}

SET_INLINE int smc_clc_prfx_set(struct socket *clcsock, int prop)
{
	return LOOKUP(FIXED_SET, clcsock->sk, prop + 2);
}

int smc_clc_send_proposal(struct socket *clcsock, int prop)
{
	return smc_clc_prfx_set(clcsock, prop) + use_dev(0, 7);
}

int smc_pnet_find_roce_resource(struct sock *sk, int ini)
{
	return LOOKUP(ALL_FIXED, sk, ini + 3);
}

int smc_pnet_find_ism_resource(struct sock *sk, int ini)
{
	return LOOKUP(ALL_FIXED, sk, ini + 4);
}

#ifndef NO_VLAN
int smc_vlan_by_tcpsk(struct socket *clcsock, int ini)
{
	return LOOKUP(ALL_FIXED, clcsock->sk, ini + 5);
}
#endif

static const char __modinfo_name[] __attribute__((used, section(".modinfo"), aligned(1)))
	= "name=smc";
static const char __modinfo_vermagic[] __attribute__((used, section(".modinfo"), aligned(1)))
	= VERMAGIC;
"""

TLS_C = COMMON_C + r"""
#ifdef INLINE_GET
#define GET_INLINE static inline __attribute__((always_inline))
#else
#define GET_INLINE static __attribute__((noinline))
#endif

GET_INLINE int get_netdev_for_sock(struct sock *sk)
{
	return LOOKUP(ALL_FIXED, sk, 9);
}

int tls_set_device_offload(struct sock *sk, int ctx)
{
	return get_netdev_for_sock(sk) + use_dev(0, ctx);
}

int tls_set_device_offload_rx(struct sock *sk, int ctx)
{
	return get_netdev_for_sock(sk) + use_dev(0, ctx + 1);
}

static const char __modinfo_name[] __attribute__((used, section(".modinfo"), aligned(1)))
	= "name=tls";
static const char __modinfo_vermagic[] __attribute__((used, section(".modinfo"), aligned(1)))
	= VERMAGIC;
"""

SMC_FIXES = {"235f81045c00", "935d783e5de9", "3d3466878afd", "0b0e4d51c655"}
TLS_FIX = "c65f27b9c3be"


def build(tmp: Path, source: str, name: str, *defines: str, debug: bool = False,
          filename: str = "smc_clc.c") -> Path:
    return elfobjs.compile_c(tmp, source, f"{name}.o", debug=debug, defines=defines,
                             filename=filename)


def verdicts(path: Path) -> dict[str, str]:
    return {f.fix: f.verdict for f in inspect_module(path).fixes}


# -- the data ------------------------------------------------------------------------------------


def test_every_signature_loads_with_what_the_brief_names() -> None:
    fixes = {f.id: f for f in load_fixes()}
    assert set(fixes) == SMC_FIXES | {TLS_FIX}
    assert load_fixes()[0].cve == "CVE-2025-40168"  # the first: the top-level verdict's
    assert {f.cve for f in fixes.values()} == {"CVE-2025-40168", "CVE-2025-40139",
                                               "CVE-2025-40064", "CVE-2025-40149", ""}
    assert fixes["0b0e4d51c655"].label == "0b0e4d51c655"
    assert modules() == ["smc", "tls"]
    assert {f.id for f in fixes_for_module("smc")} == SMC_FIXES
    assert fixes[TLS_FIX].inlined_into == {
        "get_netdev_for_sock": ("tls_set_device_offload", "tls_set_device_offload_rx")}
    for fix in fixes.values():  # the dst refcount tells the two shapes apart in every fix
        assert {"dst_release", "rcuref_get_slowpath"} <= fix.vulnerable_references
        assert "__rcu_read_lock" in fix.rcu_lock


def test_signature_ids_match_the_patch_series() -> None:
    """The smc fixes' series_id names a fix of data/patches/series and the same functions."""
    from smcpatch.data import DEFAULT_PATCHES
    from smcpatch.pipeline.classify import load_series

    series = {f.id: f for f in load_series(DEFAULT_PATCHES, "all")}
    for fix in fixes_for_module("smc"):
        assert fix.series_id in series, fix
        assert set(fix.functions) <= set(series[fix.series_id].functions)


@pytest.mark.parametrize(("text", "message"), [
    ("id = 1", "malformed fix signature"),
    ("this is not toml", "cannot read the fix signature"),
])
def test_a_malformed_signature_is_a_config_error(tmp_path: Path, text: str,
                                                 message: str) -> None:
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_fixes(tmp_path)


def test_a_signature_without_references_is_refused(tmp_path: Path) -> None:
    from smcpatch.data import FIXES_DIR

    text = (FIXES_DIR / "CVE-2025-40168.toml").read_text()
    start = text.index("references = [")
    end = text.index("]", start) + 1
    (tmp_path / "x.toml").write_text(text[:start] + "references = []" + text[end:])
    with pytest.raises(ConfigError, match="nothing would tell the two apart"):
        load_fixes(tmp_path)


def test_no_signature_at_all_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no fix signatures"):
        load_fixes(tmp_path)


# -- each smc fix, judged on its own --------------------------------------------------------------


@pytest.mark.parametrize("preempt", [True, False], ids=["preempt-rcu", "tree-rcu"])
@pytest.mark.parametrize("debug", [False, True], ids=["stripped", "dwarf"])
def test_each_smc_fix_vulnerable_and_fixed(tmp_path: Path, preempt: bool, debug: bool) -> None:
    rcu = ("PREEMPT_RCU",) if preempt else ()
    vulnerable = build(tmp_path, SMC_C, "vuln", *rcu, debug=debug)
    fixed = build(tmp_path, SMC_C, "fixed", "FIXED", *rcu, debug=debug)
    assert verdicts(vulnerable) == dict.fromkeys(SMC_FIXES, "vulnerable")
    assert verdicts(fixed) == dict.fromkeys(SMC_FIXES, "fixed")
    info = inspect_module(fixed)
    assert info.evidence.function == "smc_clc_prfx_match" and info.evidence.verdict == "fixed"
    pnet = next(f for f in info.fixes if f.fix == "3d3466878afd")
    assert [e.function for e in pnet.evidence] == ["smc_pnet_find_roce_resource",
                                                   "smc_pnet_find_ism_resource"]
    vuln = next(f for f in inspect_module(vulnerable).fixes if f.fix == "0b0e4d51c655")
    assert vuln.cve is None and vuln.evidence[0].dst_ref_sites
    assert any("dst_release" in r for r in vuln.reasons)
    if debug:
        assert "sk_dst_get" in (vuln.evidence[0].dwarf_inlined or [])


def test_one_fix_in_and_the_others_not(tmp_path: Path) -> None:
    """Only smc_clc_prfx_set fixed: CVE-2025-40139 alone is fixed, each fix judged on its own."""
    obj = build(tmp_path, SMC_C, "set_only", "PREEMPT_RCU", "FIXED_SET=1")
    got = verdicts(obj)
    assert got.pop("935d783e5de9") == "fixed"
    assert set(got.values()) == {"vulnerable"}


@pytest.mark.parametrize("fixed", [False, True])
def test_an_inlined_function_is_judged_in_its_caller(tmp_path: Path, fixed: bool) -> None:
    defines = ("PREEMPT_RCU", "INLINE_SET") + (("FIXED",) if fixed else ())
    obj = build(tmp_path, SMC_C, f"inline_set_{fixed}", *defines)
    prfx_set = next(f for f in inspect_module(obj).fixes if f.fix == "935d783e5de9")
    assert [e.function for e in prfx_set.evidence] == ["smc_clc_send_proposal"]
    assert prfx_set.verdict == ("fixed" if fixed else "vulnerable")
    assert "inlined" in prfx_set.evidence[0].reasons[0]


def test_a_missing_function_is_undecided_with_the_reason(tmp_path: Path) -> None:
    obj = build(tmp_path, SMC_C, "novlan", "PREEMPT_RCU", "FIXED", "NO_VLAN")
    vlan = next(f for f in inspect_module(obj).fixes if f.fix == "0b0e4d51c655")
    assert vlan.verdict == "undecided" and vlan.evidence == []
    assert "smc_vlan_by_tcpsk: not in the module" in vlan.reasons[0]
    out = inv("inspect", "--module", str(obj))
    assert out.returncode == 2, out.stdout  # the worst verdict: undecided
    assert out.stdout.splitlines()[0] == f"{obj}: fixed"  # the first fix's, as before


# -- tls.ko ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False], ids=["inlined", "out-of-line"])
@pytest.mark.parametrize("preempt", [True, False], ids=["preempt-rcu", "tree-rcu"])
def test_tls_fix(tmp_path: Path, inline: bool, preempt: bool) -> None:
    defines = (("INLINE_GET",) if inline else ()) + (("PREEMPT_RCU",) if preempt else ())
    for fixed in (False, True):
        obj = build(tmp_path, TLS_C, f"tls_{fixed}", *defines, *(("FIXED",) if fixed else ()),
                    filename="tls_device.c")
        info = inspect_module(obj)
        assert info.name == "tls"
        [fix] = info.fixes
        assert (fix.fix, fix.cve) == (TLS_FIX, "CVE-2025-40149")
        assert fix.verdict == ("fixed" if fixed else "vulnerable"), fix.reasons
        where = [e.function for e in fix.evidence]
        assert where == (["tls_set_device_offload", "tls_set_device_offload_rx"] if inline
                         else ["get_netdev_for_sock"])
        assert info.evidence.verdict == ("fixed" if fixed else "vulnerable")
        if preempt and not fixed:  # the lock alone proves nothing: sk_dst_get takes it too
            assert fix.evidence[0].rcu_lock_sites and fix.evidence[0].dst_ref_sites


def test_tls_module_through_the_command(tmp_path: Path) -> None:
    obj = build(tmp_path, TLS_C, "tls", "INLINE_GET", "PREEMPT_RCU", filename="tls_device.c")
    out = inv("inspect", "--json", "--module", str(obj))
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert_valid(doc, "smcpatch-inspect/1")
    assert doc["verdict"] == "vulnerable" and doc["name"] == "tls"
    assert [(f["cve"], f["verdict"]) for f in doc["fixes"]] == [("CVE-2025-40149", "vulnerable")]
    text = inv("inspect", "--module", str(obj)).stdout
    assert any(line.split()[:2] == ["CVE-2025-40149", "vulnerable"] for line in text.splitlines())


def test_json_lists_every_fix_and_old_documents_stay_valid(tmp_path: Path) -> None:
    obj = build(tmp_path, SMC_C, "vuln", "PREEMPT_RCU")
    out = inv("inspect", "--json", "--module", str(obj))
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert_valid(doc, "smcpatch-inspect/1")
    assert {f["fix"] for f in doc["fixes"]} == SMC_FIXES
    assert all(f["judged"] and f["verdict"] == "vulnerable" for f in doc["fixes"])
    del doc["fixes"]  # a document of an earlier version
    assert_valid(doc, "smcpatch-inspect/1")


def test_an_object_holding_no_fix_is_refused(tmp_path: Path) -> None:
    obj = elfobjs.compile_c(tmp_path, "int f(void) { return 1; }\n", "none.o")
    with pytest.raises(InspectError, match="does not contain smc_clc_prfx_match"):
        inspect_module(obj)
