"""The Coccinelle rules of `audit` (src/smcpatch/data/cocci/) and the code that runs them: every
rule checked by spatch itself, in cvehound's format, and run over small C files shaped like the
real functions, vulnerable and fixed (written here)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from smcpatch.data import COCCI_DIR, DEFAULT_PATCHES
from smcpatch.errors import AuditError, BadInput, ConfigError
from smcpatch.kernels.targets import Target
from smcpatch.pipeline import audit, fetch
from smcpatch.pipeline.classify import load_series
from smcpatch.pipeline.fetch import Workspace
from smcpatch.plumbing import proc
from smcpatch.plumbing.cache import MANIFEST, Cache, atomic_dir
from tests.elfobjs import require_tool

FIX_RULES = sorted(COCCI_DIR.glob("*.cocci"))
GENERAL_RULES = sorted((COCCI_DIR / "general").glob("*.cocci"))
SHA = re.compile(r"^[0-9a-f]{12,40}$")


@pytest.fixture(scope="module")
def spatch() -> str:
    return require_tool("spatch", "coccinelle")


# -- the rules as files ---------------------------------------------------------------------------
def test_the_rules_are_there() -> None:
    assert {p.stem for p in FIX_RULES} == {
        "CVE-2025-40168", "CVE-2025-40139", "CVE-2025-40064", "CVE-2025-40149",
        "smc_vlan_by_tcpsk-0b0e4d51c655"}
    assert [p.name for p in GENERAL_RULES] == ["sk_dst_get-dev.cocci"]


def test_every_smc_fix_of_the_series_has_a_rule() -> None:
    """The patch series and the rules name the same fixes, files and functions (a rule names
    the vulnerable functions; a fix may change helpers too)."""
    rules = {r.id: r for r in audit.load_rules()}
    series = load_series(DEFAULT_PATCHES, select="all")
    assert {f.id for f in series if all(x.startswith("net/smc/") for x in f.files)} <= set(rules)
    for fix in series:
        if fix.id in rules:
            assert set(rules[fix.id].functions) <= set(fix.functions), fix.id
            assert set(rules[fix.id].files) == set(fix.files), fix.id


@pytest.mark.parametrize("path", FIX_RULES + GENERAL_RULES, ids=lambda p: p.name)
def test_every_rule_parses_with_spatch(spatch: str, path: Path) -> None:
    done = proc.run([spatch, "--parse-cocci", str(path)], capture_output=True, text=True,
                    timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # what spatch prints for a rule it read whole: the rule, then the words files must have
    assert "@err" in done.stdout and "Grep query" in done.stdout


@pytest.mark.parametrize("path", FIX_RULES + GENERAL_RULES, ids=lambda p: p.name)
def test_every_rule_is_in_cvehounds_format(path: Path) -> None:
    """The `///` header first (cvehound reads the first contiguous block), `virtual detect`, a
    bound position and a python block that reports it, only in detect mode."""
    text = path.read_text()
    header = [ln for ln in text.splitlines()[:10] if ln.startswith("///")]
    assert text.startswith("/// Files: ") and len(header) >= 2
    rule = audit.parse_rule(path, general=path.parent.name == "general")
    assert rule.files and SHA.match(rule.fix), rule
    if not rule.general:
        assert rule.fixes and all(SHA.match(x) for x in rule.fixes.split()), rule
        assert rule.id.startswith("CVE-") or rule.id.endswith(rule.fix[:12]), rule
        for function in rule.functions:  # the header names where the rule is anchored
            assert re.search(rf"\b{function}\b", text.split("@@", 1)[1]), function
    assert "\nvirtual detect\n" in text
    assert re.search(r"^position p;$", text, re.MULTILINE)
    assert "@script:python depends on detect@" in text
    assert "coccilib.report.print_report(p[0]," in text


def test_a_rule_without_its_header_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "CVE-2000-0001.cocci"
    bad.write_text("/// Files: net/x.c\n/// Fix: 0123456789ab\nvirtual detect\n")
    with pytest.raises(ConfigError, match="lacks Fixes, Functions"):
        audit.parse_rule(bad)
    assert audit.parse_rule(bad, general=True).fixes is None  # the general rule needs less
    with pytest.raises(ConfigError, match="no Coccinelle rules"):
        audit.load_rules(tmp_path / "empty")


# -- synthetic sources: the real functions' shapes, vulnerable and fixed ------------------------
VULNERABLE = {
    "net/smc/smc_clc.c": """\
        static int smc_clc_prfx_set(struct socket *clcsock,
                                    struct smc_clc_msg_proposal_prefix *prop)
        {
            struct dst_entry *dst = sk_dst_get(clcsock->sk);
            int rc = -ENOENT;

            if (!dst) {
                rc = -ENOTCONN;
                goto out;
            }
            if (!dst->dev) {
                rc = -ENODEV;
                goto out_rel;
            }
            rcu_read_lock();
            rc = smc_clc_prfx_set4_rcu(dst, 0, prop);
            rcu_read_unlock();
        out_rel:
            dst_release(dst);
        out:
            return rc;
        }

        int smc_clc_prfx_match(struct socket *clcsock,
                               struct smc_clc_msg_proposal_prefix *prop)
        {
            struct dst_entry *dst = sk_dst_get(clcsock->sk);
            int rc;

            if (!dst) {
                rc = -ENOTCONN;
                goto out;
            }
            if (!dst->dev) {
                rc = -ENODEV;
                goto out_rel;
            }
            rcu_read_lock();
            if (!prop->ipv6_prefixes_cnt)
                rc = smc_clc_prfx_match4_rcu(dst->dev, prop);
            else
                rc = smc_clc_prfx_match6_rcu(dst->dev, prop);
            rcu_read_unlock();
        out_rel:
            dst_release(dst);
        out:
            return rc;
        }
        """,
    "net/smc/smc_pnet.c": """\
        void smc_pnet_find_roce_resource(struct sock *sk, struct smc_init_info *ini)
        {
            struct dst_entry *dst = sk_dst_get(sk);

            if (!dst)
                goto out;
            if (!dst->dev)
                goto out_rel;
            smc_pnet_find_roce_by_pnetid(dst->dev, ini);
        out_rel:
            dst_release(dst);
        out:
            return;
        }

        void smc_pnet_find_ism_resource(struct sock *sk, struct smc_init_info *ini)
        {
            struct dst_entry *dst;

            ini->ism_dev[0] = NULL;
            dst = sk_dst_get(sk);
            if (!dst)
                goto out;
            smc_pnet_find_ism_by_pnetid(dst->dev, ini);
            dst_release(dst);
        out:
            return;
        }
        """,
    "net/smc/smc_core.c": """\
        int smc_vlan_by_tcpsk(struct socket *clcsock, struct smc_init_info *ini)
        {
            struct dst_entry *dst = sk_dst_get(clcsock->sk);
            struct net_device *ndev;
            int rc = 0;

            ini->vlan_id = 0;
            if (!dst) {
                rc = -ENOTCONN;
                goto out;
            }
            ndev = dst->dev;
            if (is_vlan_dev(ndev))
                ini->vlan_id = vlan_dev_vlan_id(ndev);
            dst_release(dst);
        out:
            return rc;
        }
        """,
    "net/tls/tls_device.c": """\
        static struct net_device *get_netdev_for_sock(struct sock *sk)
        {
            struct dst_entry *dst = sk_dst_get(sk);
            struct net_device *netdev = NULL;

            if (likely(dst)) {
                netdev = netdev_sk_get_lowest_dev(dst->dev, sk);
                dev_hold(netdev);
            }

            dst_release(dst);

            return netdev;
        }
        """,
}

# the fixed forms: __sk_dst_get() + dst_dev_rcu() under rcu_read_lock(), as upstream wrote them
FIXED_BODY = """\
        {
            struct net_device *dev;
            struct dst_entry *dst;
            int rc = 0;

            rcu_read_lock();
            dst = __sk_dst_get(sk);
            dev = dst ? dst_dev_rcu(dst) : NULL;
            if (dev)
                rc = use(dev);
            rcu_read_unlock();
            return rc;
        }
        """
FIXED = {
    "net/smc/smc_clc.c": ["static int smc_clc_prfx_set(struct sock *sk)",
                          "int smc_clc_prfx_match(struct sock *sk)"],
    "net/smc/smc_pnet.c": ["void smc_pnet_find_roce_resource(struct sock *sk)",
                           "void smc_pnet_find_ism_resource(struct sock *sk)"],
    "net/smc/smc_core.c": ["int smc_vlan_by_tcpsk(struct sock *sk)"],
    "net/tls/tls_device.c": ["static struct net_device *get_netdev_for_sock(struct sock *sk)"],
}
EXPECTED = {  # rule -> (file, function) of each site in the vulnerable tree
    "CVE-2025-40168": [("net/smc/smc_clc.c", "smc_clc_prfx_match")],
    "CVE-2025-40139": [("net/smc/smc_clc.c", "smc_clc_prfx_set")],
    "CVE-2025-40064": [("net/smc/smc_pnet.c", "smc_pnet_find_roce_resource"),
                       ("net/smc/smc_pnet.c", "smc_pnet_find_ism_resource")],
    "smc_vlan_by_tcpsk-0b0e4d51c655": [("net/smc/smc_core.c", "smc_vlan_by_tcpsk")],
    "CVE-2025-40149": [("net/tls/tls_device.c", "get_netdev_for_sock")],
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def vulnerable_tree(root: Path) -> Path:
    return write_tree(root, VULNERABLE)


def fixed_tree(root: Path) -> Path:
    return write_tree(root, {name: "\n".join(f"{sig}\n{FIXED_BODY}" for sig in sigs)
                             for name, sigs in FIXED.items()})


def call_line(tree: Path, file: str, function: str) -> int:
    """The line of the sk_dst_get() call inside `function` (what a site names)."""
    lines = (tree / file).read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.search(rf"\b{function}\(", ln))
    return next(i for i in range(start, len(lines)) if "sk_dst_get(" in lines[i]) + 1


def test_each_rule_finds_its_vulnerable_functions(spatch: str, tmp_path: Path) -> None:
    tree = vulnerable_tree(tmp_path)
    runs = {r.rule.id: r for r in audit.audit(tree, audit.load_rules())}
    assert set(runs) == set(EXPECTED)
    for rule_id, sites in EXPECTED.items():
        run = runs[rule_id]
        assert run.state == "vulnerable", (rule_id, run.state)
        found = {(s.file, s.function): s for s in run.sites}
        assert set(found) == set(sites), rule_id
        for (file, function), site in found.items():
            assert site.line == call_line(tree, file, function)
            assert site.known and site.rule == rule_id and site.fix == run.rule.fix


def test_no_rule_finds_the_fixed_functions(spatch: str, tmp_path: Path) -> None:
    runs = audit.audit(fixed_tree(tmp_path), audit.load_rules(general=True))
    assert [(r.rule.id, r.state) for r in runs] == [
        ("CVE-2025-40064", "clean"), ("CVE-2025-40139", "clean"), ("CVE-2025-40149", "clean"),
        ("CVE-2025-40168", "clean"), ("smc_vlan_by_tcpsk-0b0e4d51c655", "clean"),
        ("sk_dst_get-dev", "absent")]  # no file names sk_dst_get: spatch is not even run
    assert not any(r.sites for r in runs)


def test_a_tree_without_a_rules_files_or_functions_says_nothing_of_its_fix(
        spatch: str, tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"net/smc/smc_clc.c": "int other(void) { return 0; }\n"})
    runs = {r.rule.id: r for r in audit.audit(tree, audit.load_rules())}
    assert runs["CVE-2025-40168"].state == "absent"
    assert runs["CVE-2025-40168"].missing_functions == ["smc_clc_prfx_match"]
    assert runs["CVE-2025-40149"].state == "absent" and runs["CVE-2025-40149"].files == []


# -- the general rule ------------------------------------------------------------------------------
GENERAL = {
    "net/ipv4/tcp_fastopen.c": """\
        void tcp_fastopen_active_disable_ofo_check(struct sock *sk)
        {
            struct dst_entry *dst;

            dst = sk_dst_get(sk);
            if (!(dst && dst->dev && (dst->dev->flags & IFF_LOOPBACK)))
                reset(sk);
            dst_release(dst);
        }

        static int mtu_only(struct sock *sk)
        {
            struct dst_entry *dst = sk_dst_get(sk);
            int val = 0;

            if (dst) {
                val = dst_mtu(dst);
                dst_release(dst);
            }
            return val;
        }
        """,
    "drivers/net/foo/foo.c": """\
        static int foo_ifindex(struct sock *sk)
        {
            struct dst_entry *d = sk_dst_get(sk);
            int ifindex = d ? dst_dev(d)->ifindex : 0;

            dst_release(d);
            return ifindex;
        }

        static int foo_direct(struct sock *sk)
        {
            return sk_dst_get(sk)->dev->mtu;
        }

        static int foo_fixed(struct sock *sk)
        {
            struct dst_entry *dst;
            int ifindex = 0;

            rcu_read_lock();
            dst = __sk_dst_get(sk);
            if (dst)
                ifindex = dst_dev_rcu(dst)->ifindex;
            rcu_read_unlock();
            return ifindex;
        }
        """,
    "drivers/infiniband/bar.c": "static int bar(void) { return 0; }\n",
    "net/notes.txt": "sk_dst_get(sk)->dev in a text file is not C\n",
}


def test_the_general_rule_finds_the_shape_anywhere(spatch: str, tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {**VULNERABLE, **GENERAL})
    runs = audit.audit(tree, audit.load_rules(general=True))
    general = runs[-1]
    assert general.rule.general and general.state == "candidates"
    # only the C files that name sk_dst_get are read
    assert general.files == ["drivers/net/foo/foo.c", "net/ipv4/tcp_fastopen.c",
                             "net/smc/smc_clc.c", "net/smc/smc_core.c", "net/smc/smc_pnet.c",
                             "net/tls/tls_device.c"]
    found = {s.function: s for s in general.sites}
    assert set(found) == {"tcp_fastopen_active_disable_ofo_check", "foo_ifindex", "foo_direct",
                          *(f for sites in EXPECTED.values() for _, f in sites)}
    assert not any(s.known for s in general.sites)
    # a candidate a fix's rule found too names it; the others name none
    assert found["smc_clc_prfx_match"].also == ("CVE-2025-40168",)
    assert found["get_netdev_for_sock"].also == ("CVE-2025-40149",)
    assert found["foo_ifindex"].also == ()
    assert found["foo_direct"].line == call_line(tree, "drivers/net/foo/foo.c", "foo_direct")


# -- spatch's output, failures and the tree's checks ---------------------------------------------
def test_sites_are_read_once_each_in_order() -> None:
    rule = audit.parse_rule(COCCI_DIR / "CVE-2025-40064.cocci")
    ism, roce = "smc_pnet_find_ism_resource", "smc_pnet_find_roce_resource"
    output = (f"net/smc/smc_pnet.c:1147:25-35: ERROR: CVE-2025-40064 in {ism}\n"
              f"net/smc/smc_pnet.c:1130:25-35: ERROR: CVE-2025-40064 in {roce}\n"
              f"net/smc/smc_pnet.c:1147:25-35: ERROR: CVE-2025-40064 in {ism}\n"
              "init_defs_builtins: /usr/lib/coccinelle/standard.h\n")
    sites = audit.parse_sites(output, rule)
    assert [(s.line, s.column, s.function) for s in sites] == [
        (1130, 25, "smc_pnet_find_roce_resource"), (1147, 25, "smc_pnet_find_ism_resource")]


def test_a_rule_spatch_refuses_is_an_audit_error(spatch: str, tmp_path: Path) -> None:
    rule_file = tmp_path / "CVE-2000-0001.cocci"
    rule_file.write_text("/// Files: a.c\n/// Fix: 0123456789ab\n/// Fixes: 0123456789ab\n"
                         "/// Functions: f\n\nvirtual detect\n\n@err@\nposition p\n@@\nf(\n")
    (tmp_path / "a.c").write_text("int f(void) { return 0; }\n")
    with pytest.raises(AuditError, match=r"spatch failed \(exit \d+\) on CVE-2000-0001.cocci"):
        audit.run_rule(audit.parse_rule(rule_file), tmp_path)
    assert AuditError("x").exit_code == 1


def test_a_slow_spatch_is_stopped(spatch: str, tmp_path: Path) -> None:
    tree = vulnerable_tree(tmp_path)
    rule = audit.parse_rule(COCCI_DIR / "CVE-2025-40168.cocci")
    with pytest.raises(AuditError, match="timed out after"):
        audit.run_rule(rule, tree, timeout=0.01)


def test_a_user_tree_must_hold_a_rules_file(tmp_path: Path) -> None:
    rules = audit.load_rules()
    with pytest.raises(BadInput, match="not a directory"):
        audit.check_tree(tmp_path / "nope", rules)
    with pytest.raises(BadInput, match="none of the files the rules read"):
        audit.check_tree(tmp_path, rules)
    audit.check_tree(vulnerable_tree(tmp_path), rules)


def test_the_members_of_a_kernels_tree_nest_nothing() -> None:
    members = audit.members_of(audit.load_rules(general=True))
    assert members == ["drivers/infiniband", "drivers/net", "net"]  # net/ holds smc and tls
    assert audit.members_of(audit.load_rules()) == [
        "net/smc/smc_clc.c", "net/smc/smc_core.c", "net/smc/smc_pnet.c", "net/tls/tls_device.c"]


# -- the tree of a Debian kernel: fetch's, the full one, or the rules' paths extracted once -------
def _workspace(tmp_path: Path) -> tuple[Cache, Workspace]:
    target = Target(version="6.1.176", package_version="6.1.176-1", abi="6.1.0-50", series="6.1")
    cache = Cache.open(tmp_path / "cache")
    ws = Workspace(target=target, kdir=tmp_path / "kdir", source_tree=tmp_path / "src" / "tree",
                   shipped_module=None, image_deb=None)
    return cache, ws


def _source_deb(cache: Cache, ws: Workspace, work: Path) -> None:
    """A linux-source package as Debian builds it (an inner linux-source-6.1.tar.xz), cached
    where fetch's net/smc extraction left it (its manifest names the deb)."""
    top = work / "linux-source-6.1"
    vulnerable_tree(top)
    write_tree(top, {**GENERAL, "Makefile": "# the kernel\n", "fs/ext4/inode.c": "int x;\n"})
    pkg = work / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: linux-source-6.1\nVersion: 6.1.176-1\nArchitecture: all\n"
        "Maintainer: test <test@invalid>\nDescription: test\n")
    (pkg / "usr" / "src").mkdir(parents=True)
    proc.run(["tar", "-cJf", str(pkg / "usr/src/linux-source-6.1.tar.xz"), "-C", str(work),
              "linux-source-6.1"], check=True, timeout=120)
    deb = cache.dir("debs", "linux-source-6.1_6.1.176-1_all.deb")
    proc.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)], check=True,
             capture_output=True, timeout=120)
    sources = cache.dir("sources", f"{ws.target.source_package}_{ws.target.package_version}")
    sources.mkdir(parents=True)
    (sources / MANIFEST).write_text(json.dumps({"key": "x", "deb": deb.name}))


def test_a_kernels_tree_is_fetchs_when_it_holds_every_rules_file(tmp_path: Path) -> None:
    cache, ws = _workspace(tmp_path)
    vulnerable_tree(ws.source_tree)
    rules = audit.load_rules()
    assert audit.kernel_tree(cache, ws, rules, audit.members_of(rules)) == (ws.source_tree,
                                                                             "fetched")


def test_a_kernels_tree_is_the_full_one_when_race_extracted_it(tmp_path: Path) -> None:
    cache, ws = _workspace(tmp_path)
    write_tree(ws.source_tree, {"net/smc/smc_clc.c": VULNERABLE["net/smc/smc_clc.c"]})
    entry = fetch.full_source_entry(cache, ws.target)
    with atomic_dir(entry, fetch.full_source_key(ws.target)) as tmp:
        write_tree(tmp / "tree", {"Makefile": "# the kernel\n"})
    rules = audit.load_rules()  # tls's file is not in fetch's net/smc sources
    assert audit.kernel_tree(cache, ws, rules, audit.members_of(rules)) == (entry / "tree",
                                                                            "full")


def test_a_kernels_tree_is_else_the_rules_paths_extracted_once(tmp_path: Path) -> None:
    for tool, package in (("dpkg-deb", "dpkg"), ("xz", "xz-utils")):
        require_tool(tool, package)
    cache, ws = _workspace(tmp_path)
    _source_deb(cache, ws, tmp_path / "work")
    every = audit.load_rules(general=True)
    said: list[str] = []
    tree, origin = audit.kernel_tree(cache, ws, audit.load_rules(), audit.members_of(every),
                                     lambda message, done=None, total=None: said.append(message))
    assert origin == "extracted" and tree == cache.root / "audit-sources" / (
        "linux-source-6.1_6.1.176-1") / "tree"
    assert said == ["extract drivers/infiniband, drivers/net, net from "
                    "linux-source-6.1_6.1.176-1_all.deb"]
    assert (tree / "net/tls/tls_device.c").is_file() and (tree / "drivers/net/foo/foo.c").is_file()
    assert not (tree / "fs").exists() and not (tree / "Makefile").exists()  # only the rules' paths
    said.clear()  # the second time: the cached entry, nothing extracted
    again = audit.kernel_tree(cache, ws, every, audit.members_of(every),
                              lambda message, done=None, total=None: said.append(message))
    assert again == (tree, "extracted") and said == []
    runs = audit.audit(tree, every)
    assert {s.function for r in runs for s in r.sites if s.known} == {
        f for sites in EXPECTED.values() for _, f in sites}
