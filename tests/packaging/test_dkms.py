"""DKMS source packages (smcpatch.packaging.dkms).

Unit tests write packages from synthetic trees (verbatim excerpts of the real smc_clc.c) and check
dkms.conf with bash itself, the way dkms reads it. Integration tests run Debian's real dkms
(`dkms add` + `dkms build`, private trees) against the extracted headers of real kernels and
inspect the module it builds; nothing is installed or loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from smcpatch.commands import dkms as dkms_cmd
from smcpatch.data import DEFAULT_PATCHES
from smcpatch.errors import BadInput, PatchError, ToolMissing
from smcpatch.kernels.matrix import load_matrix
from smcpatch.kernels.targets import Target
from smcpatch.packaging import dkms
from smcpatch.pipeline import classify as patching
from smcpatch.pipeline.fetch import Workspace
from tests import synthetic

DATA = synthetic.data_dir()  # made from our patch: no kernel code in the repo


# dkms add refuses to run as non-root (its check_root), even with private trees
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dkms add/build need root")


PATCHES = DEFAULT_PATCHES


MAIN_PATCH = "0001-smc-clc-prfx-match-rcu.patch"


DST_H = ("struct dst_entry { struct net_device *dev; };\n"
         "static inline struct net_device *dst_dev_rcu(const struct dst_entry *dst)\n"
         "{ return READ_ONCE(dst->dev); }\n")


def _target(version: str) -> Target:
    return next(t for t in load_matrix() if t.version == version)


def synthetic_ws(root: Path, clc: Path, version: str = "6.1.176") -> Workspace:
    tree = root / "tree"
    (tree / "net" / "smc").mkdir(parents=True)
    (tree / "include" / "net").mkdir(parents=True)
    shutil.copy(clc, tree / "net" / "smc" / "smc_clc.c")
    (tree / "net" / "smc" / "Makefile").write_text("obj-$(CONFIG_SMC) += smc.o\n")
    (tree / "net" / "smc" / "smc.h").write_text("/* header */\n")
    (tree / "include" / "net" / "dst.h").write_text(DST_H)
    return Workspace(target=_target(version), kdir=root / "kdir", source_tree=tree,
                     shipped_module=None, image_deb=None)


def states_for(ws: Workspace, wanted: list[str] | None = None) -> list[patching.FixState]:
    fixes = patching.load_series(PATCHES, wanted or ["default"])
    return patching.classify(ws.source_tree, fixes)


def bash_conf(package: Path, script: str) -> str:
    """Source dkms.conf in bash (as dkms does) with dkms's variables set, run script."""
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    prelude = "kernel_source_dir=/KDIR; dkms_tree=/DKMSTREE; . ./dkms.conf; "
    proc = subprocess.run(["bash", "-c", prelude + script + "; true"], cwd=package, env=env,
                          capture_output=True, text=True, check=True)
    return proc.stdout


# -- real kernels, Debian's dkms ----------------------------------------------------------------
def _nothing_outside(release: str) -> None:
    assert not Path(f"/lib/modules/{release}").exists()
    assert not list(Path("/usr/src").glob(f"{dkms.PACKAGE_NAME}-*"))
    assert not Path(f"/var/lib/dkms/{dkms.PACKAGE_NAME}").exists()


# -- writing -----------------------------------------------------------------------------------
def test_vulnerable_tree_gets_patch_line(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    states = states_for(ws)
    assert [s.state for s in states] == ["vulnerable"]
    out = dkms.write_package(ws, states, tmp_path / "pkg")
    assert out == tmp_path / "pkg"
    conf = (out / "dkms.conf").read_text()
    assert 'PACKAGE_NAME="smc-cve-2025-40168"' in conf
    assert 'PACKAGE_VERSION="6.1.176-1"' in conf
    assert f'PATCH[0]="{MAIN_PATCH}"' in conf
    assert 'PATCH_MATCH[0]="^6\\.1\\.0-50-"' in conf
    assert 'BUILD_EXCLUSIVE_KERNEL="^6\\.1\\.0-50-"' in conf
    assert 'BUILT_MODULE_NAME[0]="smc"' in conf
    assert 'DEST_MODULE_LOCATION[0]="/updates/dkms"' in conf
    assert "AUTOINSTALL=" not in conf  # dkms 3.0 treats any value, "no" too, as yes
    # the sources are the vendor's, unpatched; the patch is ours, byte for byte
    assert (out / "net/smc/smc_clc.c").read_bytes() == (DATA / "smc_clc_vulnerable.c").read_bytes()
    assert (out / "patches" / MAIN_PATCH).read_bytes() == (PATCHES / MAIN_PATCH).read_bytes()
    assert sorted(p.name for p in (out / "net/smc").iterdir()) == ["Makefile", "smc.h",
                                                                   "smc_clc.c"]
    readme = (out / dkms.README).read_text()
    assert ("CVE-2025-40168 (smc_clc_prfx_match): patched by dkms at build time: "
            f"patches/{MAIN_PATCH}") in readme
    marker = json.loads((out / dkms.MARKER).read_text())
    assert marker["patches"] == [MAIN_PATCH]
    assert marker["fixes"] == {"CVE-2025-40168": "vulnerable"}
    assert not list(tmp_path.glob(".tmp-*"))


def test_dkms_conf_as_bash_reads_it(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    out = dkms.write_package(ws, states_for(ws), tmp_path / "pkg")
    make = bash_conf(out, 'echo "${MAKE[0]}"').strip()
    assert make == ("make -C /KDIR M=/DKMSTREE/smc-cve-2025-40168/6.1.176-1/build/net/smc "
                    "CONFIG_SMC=m CONFIG_SMC_DIAG=m modules")
    # PATCH_MATCH as dkms evaluates it: [[ $kernelver =~ ${PATCH_MATCH[i]} ]]
    check = 'for k in {}; do [[ $k =~ ${{PATCH_MATCH[0]}} ]] && echo "$k"; done'
    releases = ("6.1.0-50-amd64 6.1.0-50-cloud-amd64 6.1.0-50-rt-amd64 6.1.0-500-amd64 "
                "6.1.0-51-amd64 16.1.0-50-amd64 6x1.0-50-amd64")
    assert bash_conf(out, check.format(releases)).split() == [
        "6.1.0-50-amd64", "6.1.0-50-cloud-amd64", "6.1.0-50-rt-amd64"]


def test_release_regex_escapes_plus(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c", version="6.12.107")
    out = dkms.write_package(ws, states_for(ws), tmp_path / "pkg")
    assert 'PACKAGE_VERSION="6.12.107-1.deb12u1"' in (out / "dkms.conf").read_text()  # no '~'
    check = 'for k in {}; do [[ $k =~ $BUILD_EXCLUSIVE_KERNEL ]] && echo "$k"; done'
    releases = ("6.12.107+deb12-amd64 6.12.107+deb12-rt-amd64 6.12.107deb12-amd64 "
                "6.12.107+deb13-amd64 6.12.1070+deb12-amd64")
    assert bash_conf(out, check.format(releases)).split() == [
        "6.12.107+deb12-amd64", "6.12.107+deb12-rt-amd64"]


def test_fixed_tree_has_no_patch_line(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_fixed.c")
    states = states_for(ws)
    assert [s.state for s in states] == ["fixed"]
    out = dkms.write_package(ws, states, tmp_path / "pkg")
    conf = (out / "dkms.conf").read_text()
    assert "PATCH[" not in conf and "PATCH_MATCH[" not in conf
    assert "# CVE-2025-40168: already in these sources, no patch needed" in conf
    assert not (out / "patches").exists()
    readme = (out / dkms.README).read_text()
    assert "CVE-2025-40168 (smc_clc_prfx_match): already fixed in Debian's source: no patch" \
        in readme
    assert "has no PATCH line" in readme
    assert bash_conf(out, 'echo "${#PATCH[@]}"').strip() == "0"


def test_unknown_state_is_refused(tmp_path: Path) -> None:
    text = (DATA / "smc_clc_vulnerable.c").read_text()
    assert "\t\trc = -ENOTCONN;\n" in text
    (tmp_path / "half.c").write_text(text.replace("\t\trc = -ENOTCONN;\n", "\t\trc = -EIO;\n"))
    ws = synthetic_ws(tmp_path, tmp_path / "half.c")
    states = states_for(ws)
    assert states[0].state == "unknown"
    with pytest.raises(PatchError, match="CVE-2025-40168 neither applies nor reverts"):
        dkms.write_package(ws, states, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_tree_without_net_smc(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    states = states_for(ws)
    shutil.rmtree(ws.source_tree / "net")
    with pytest.raises(BadInput, match="holds no net/smc sources"):
        dkms.write_package(ws, states, tmp_path / "pkg")


def test_smc_disabled_kernel_is_refused(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c", version="7.3.4")
    ws.kdir.mkdir()
    (ws.kdir / ".config").write_text("CONFIG_NET=y\n# CONFIG_SMC is not set\n")
    with pytest.raises(BadInput, match=r"SMC is not enabled in 7\.3\.4\+deb13-amd64's config"):
        dkms.write_package(ws, states_for(ws), tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_out_dir_rules(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    states = states_for(ws)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="exists and is not empty"):
        dkms.write_package(ws, states, foreign)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(BadInput, match="is not a directory"):
        dkms.write_package(ws, states, a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (dkms.write_package(ws, states, empty) / "dkms.conf").is_file()
    # a previous package of ours is rewritten: a file that is not ours (not in its marker's
    # list) survives, untouched
    (empty / "stale.txt").write_text("old")
    dkms.write_package(ws, states, empty)
    assert (empty / "stale.txt").read_text() == "old" and (empty / "dkms.conf").is_file()


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    states = states_for(ws)

    def interrupted(*args: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(dkms, "dkms_conf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dkms.write_package(ws, states, tmp_path / "pkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_patch_that_does_not_apply_in_order(tmp_path: Path) -> None:
    """The same fix twice: classify says each applies alone, but not one after the other."""
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    st = states_for(ws)[0]
    copy = patching.FixState(fix_id="again", state="vulnerable",
                             variant=patching.PatchVariant(
                                 fix_id="again", name="main", path=tmp_path / "again.patch",
                                 functions=st.variant.functions, files=st.variant.files),
                             detail="")
    shutil.copy(st.variant.path, tmp_path / "again.patch")
    with pytest.raises(PatchError, match=f"again.patch does not apply after {MAIN_PATCH}"):
        dkms.write_package(ws, [st, copy], tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_ensure_dkms_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ToolMissing, match=r"run `apt-get install -y --no-install-recommends dkms`"):
        dkms.ensure_dkms()


def test_dkms_command_option_errors(tmp_path: Path) -> None:

    from smcpatch.kernels.request import KernelRequest

    cache, target = tmp_path / "cache", KernelRequest(("6.1.176",))

    def run(kernel: KernelRequest = target, **kwargs: object) -> object:
        return dkms_cmd.run(dkms_cmd.DkmsRequest(kernels=kernel, out_dir=tmp_path / "pkg",
                                                 cache_dir=cache, **kwargs))  # type: ignore[arg-type]

    with pytest.raises(BadInput, match="needs both --sign-key and --sign-cert"):
        run(sign_key=tmp_path / "k.pem")
    with pytest.raises(BadInput, match="add --check"):
        run(sign_key=tmp_path / "k.pem", sign_cert=tmp_path / "c.pem")
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(BadInput, match="unknown fix nosuch"):  # before any download
        run(fixes=["nosuch"])
    trixie = KernelRequest(("6.12.107+deb13",))
    with pytest.raises(BadInput, match="built with gcc-14 of trixie"):
        run(trixie, check=True)
    assert not (cache / "debs").exists()


# -- rewriting into a directory that holds more than our package --------------------------------
def test_a_rerun_keeps_what_a_user_left_and_replaces_only_ours(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    out = dkms.write_package(ws, states_for(ws), tmp_path / "pkg")
    listed = json.loads((out / dkms.MARKER).read_text())["files"]
    assert "dkms.conf" in listed and "net/smc/smc_clc.c" in listed
    assert f"patches/{MAIN_PATCH}" in listed and dkms.MARKER not in listed
    # a user's build and notes beside our files; an old file of ours the new package lacks
    (out / "net/smc/smc_clc.o").write_bytes(b"\x7fELF object")
    (out / "net/smc/.smc_clc.o.cmd").write_text("cmd")
    (out / "NOTES").write_text("mine")
    (out / "net/smc/smc.h").write_text("/* edited by hand: ours to replace */\n")
    (ws.source_tree / "net/smc/smc_old.c").write_text("/* gone next time */\n")
    dkms.write_package(ws, states_for(ws), out)
    assert (out / "net/smc/smc_old.c").is_file()
    (ws.source_tree / "net/smc/smc_old.c").unlink()
    dkms.write_package(ws, states_for(ws), out)
    assert (out / "net/smc/smc_clc.o").read_bytes() == b"\x7fELF object"
    assert (out / "net/smc/.smc_clc.o.cmd").read_text() == "cmd"
    assert (out / "NOTES").read_text() == "mine"
    assert (out / "net/smc/smc.h").read_text() == "/* header */\n"  # ours again
    assert not (out / "net/smc/smc_old.c").exists()  # ours, no longer written: removed
    marker = json.loads((out / dkms.MARKER).read_text())
    assert "NOTES" not in marker["files"] and "net/smc/smc_old.c" not in marker["files"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".smcpatch-tmp-")] == []


def test_a_user_file_where_the_package_writes_is_refused_untouched(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    out = dkms.write_package(ws, states_for(ws), tmp_path / "pkg")
    (out / "net/smc/smc_new.c").write_text("the user's own")
    (ws.source_tree / "net/smc/smc_new.c").write_text("/* Debian's */\n")
    before = (out / dkms.MARKER).read_text()
    with pytest.raises(BadInput, match="smc_new.c not written by smcpatch"):
        dkms.write_package(ws, states_for(ws), out)
    assert (out / "net/smc/smc_new.c").read_text() == "the user's own"
    assert (out / dkms.MARKER).read_text() == before


def test_a_directory_not_ours_or_a_forged_marker_is_refused(tmp_path: Path) -> None:
    ws = synthetic_ws(tmp_path, DATA / "smc_clc_vulnerable.c")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes").write_text("mine")
    with pytest.raises(BadInput, match="not empty"):
        dkms.write_package(ws, states_for(ws), theirs)
    assert [p.name for p in theirs.iterdir()] == ["notes"]
    out = dkms.write_package(ws, states_for(ws), tmp_path / "pkg")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    marker = json.loads((out / dkms.MARKER).read_text())
    marker["files"].append("../victim")
    (out / dkms.MARKER).write_text(json.dumps(marker))
    with pytest.raises(BadInput, match="outside"):
        dkms.write_package(ws, states_for(ws), out)
    assert victim.read_text() == "keep"
