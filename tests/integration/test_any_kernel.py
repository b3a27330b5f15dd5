"""Any kernel Debian ships, not just the pinned matrix (smcpatch.kernels.archive, buildenv):
the suites of the host's mirrors, resolution across them on real package lists, a backports
kernel built on the host, and a bullseye 5.10 kernel that needs gcc-10, which the host lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcpatch.errors import BadInput, FetchError
from smcpatch.kernels.archive import Archive
from smcpatch.kernels.request import KernelRequest
from smcpatch.kernels.resolve import resolve
from smcpatch.pipeline import prepare as pipeline
from smcpatch.plumbing.cache import Cache
from smcpatch.plumbing.suites import served_suites

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def archive(test_cache: Cache) -> Archive:
    found = Archive(test_cache)
    found.update()
    return found


def test_the_mirror_serves_more_than_the_host_names(test_cache: Cache) -> None:
    suites = served_suites(test_cache)
    for suite in ("bullseye", "bullseye-security", "bookworm", "bookworm-security",
                  "bookworm-backports", "trixie", "trixie-security", "trixie-backports", "sid"):
        assert suite in suites, suites
    assert "bullseye-backports" not in suites  # no Release file on this mirror: not served


@pytest.mark.parametrize(("text", "package_version", "suite", "release"), [
    ("6.12.95", "6.12.95-1~bpo12+1", "bookworm-backports", "6.12.95+deb12-amd64"),
    ("6.12.95+deb12-amd64", "6.12.95-1~bpo12+1", "bookworm-backports", "6.12.95+deb12-amd64"),
    ("6.12.95-1~bpo12+1", "6.12.95-1~bpo12+1", "bookworm-backports", "6.12.95+deb12-amd64"),
    ("5.10.223", "5.10.223-1", "bullseye", "5.10.0-32-amd64"),
    ("6.1.0-0.deb11.52-amd64", "6.1.180-1~deb11u1", "bullseye-security",
     "6.1.0-0.deb11.52-amd64"),
    ("7.3~rc7-1~exp1", "7.3~rc7-1~exp1", "experimental", "7.3-amd64"),
])
def test_resolution_by_version_debian_version_or_release(
        archive: Archive, text: str, package_version: str, suite: str, release: str) -> None:
    target = archive.resolve(text, "amd64")
    assert (target.package_version, target.suite, target.release) == (
        package_version, suite, release)
    assert target.auto_build_env and not target.build_env


def test_a_version_in_several_suites_prefers_the_hosts_release(archive: Archive) -> None:
    target = archive.resolve("6.12.107", "amd64")
    assert (target.suite, target.package_version) == ("bookworm-security", "6.12.107-1~deb12u1")
    assert "also in" in target.notes and "trixie" in target.notes
    other = archive.resolve("6.12.107", "amd64", suite="trixie")
    assert (other.package_version, other.release) == ("6.12.107-1", "6.12.107+deb13-amd64")
    with pytest.raises(BadInput, match="not in suite bullseye; it is in"):
        archive.resolve("6.12.107", "amd64", suite="bullseye")
    with pytest.raises(FetchError, match="versions available"):
        archive.resolve("6.12.3", "amd64")


def test_a_backports_kernel_is_verified_on_the_host(test_cache: Cache) -> None:
    [target] = resolve(test_cache, KernelRequest(("6.12.95",), flavour="amd64"))
    r = pipeline.verify_target(test_cache, target, pipeline.Options())
    assert r.ok, (r.error, r.problems)
    assert (r.source_state, r.build_env, r.suite) == ("vulnerable", "host", "bookworm-backports")
    assert r.after is not None and r.after.verdict == "fixed"
    assert any("the kernel's own compiler" in n and "gcc-12" in n for n in r.notes)


def test_a_510_kernel_builds_with_gcc10_in_a_bullseye_chroot(test_cache: Cache) -> None:
    """gcc-10, which the bookworm host lacks, found in bullseye by itself; 5.10 has no
    dst_dev_rcu (the compat variant) and no CONFIG_PREEMPT_RCU (the DWARF decides)."""
    [target] = resolve(test_cache, KernelRequest(("5.10.223",), flavour="amd64"))
    r = pipeline.verify_target(test_cache, target, pipeline.Options(fixes=["all"]))
    assert r.ok, (r.error, r.problems)
    assert r.build_env == "bullseye"
    assert r.compiler.startswith("gcc-10")
    assert r.vermagic_ok and r.modversions_ok
    assert r.before is not None and r.before.verdict == "vulnerable"
    assert r.after is not None and r.after.verdict == "fixed"
    assert any("decided by the DWARF evidence" in reason for reason in r.after.reasons)
    assert {f["id"]: f["variant"] for f in r.to_json()["fixes"]}["CVE-2025-40064"] == "compat510"


def test_a_file_the_mirror_lacks_is_one_clear_line(tmp_path: Path, test_cache: Cache) -> None:
    """bullseye-security's 6.1 backport: its index lists the sources, the mirror has no file."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SMCPATCH_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "invoke", "verify", "--kernel",
                           "6.1.0-0.deb11.52-amd64", "--cache", str(test_cache.root)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "the mirror does not serve the file (404" in lines[0], lines


def test_kernels_archive_lists_every_suite_with_states(test_cache: Cache) -> None:
    env = {**os.environ, "COLUMNS": "250"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "kernels", "--archive", "--cache",
                           str(test_cache.root)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    for suite in ("bullseye", "bookworm-backports", "trixie-security", "experimental"):
        assert suite in proc.stdout
    assert "6.1.0-50-amd64" in proc.stdout


@pytest.mark.parametrize(("kernel", "suite", "release"), [
    ("6.1.180", "bookworm-security", "6.1.0-52-amd64"),
    ("6.16.12", "trixie-backports", "6.16.12+deb13-amd64"),
])
def test_a_kernel_whose_sources_are_not_served_is_judged(
        test_cache: Cache, tmp_path: Path, kernel: str, suite: str, release: str) -> None:
    """The image is served, the sources are not: Debian's module judged, nothing verified
    (exit 1, a report, no traceback); the host's release wins where it has the image."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "invoke", "verify", "--kernel", kernel,
                           "--cache", str(test_cache.root), "--json", str(out)], cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    [target] = json.loads(out.read_text())["targets"]
    assert (target["suite"], target["release"], target["source_state"]) == (
        suite, release, "not-served")
    assert target["shipped"]["verdict"] in ("vulnerable", "fixed") and target["ok"] is False
    assert target["before"] is None and target["after"] is None
    assert any("not its sources" in p for p in target["problems"])
    assert "sources not served" in proc.stdout


def test_kernels_archive_says_which_can_be_built(test_cache: Cache) -> None:
    env = {**os.environ, "COLUMNS": "250"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "kernels", "--archive", "--cache",
                           str(test_cache.root)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = {tuple(c.strip() for c in line.split("│")[1:-1]) for line in proc.stdout.splitlines()
            if "│" in line}
    assert any(r[0] == "6.1.180-1" and r[1] == "bookworm-security" and r[-1] == "judge"
               for r in rows), rows
    assert any(r[0] == "6.1.176-1" and r[-1] == "build" for r in rows)
