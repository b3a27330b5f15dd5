"""Build environments of other suites: a cached minimal chroot made with mmdebstrap.

trixie's kernels are built with gcc-14 and sid's kbuild helpers need a newer glibc than the bookworm
host has. The module is then built inside a minimal chroot of the kernel's own suite, made once with
mmdebstrap from the host's own mirrors and reused. Builds run in a private mount namespace
(unshare -m) that bind-mounts the headers tree and the work dir at their own paths and mounts /proc,
so nothing stays mounted when the build ends, whatever way it ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..errors import BuildError, ToolMissing
from ..plumbing import hostpkg, proc
from ..plumbing.apt import Apt, host_sources, mirror_lines
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_inputs, read_manifest
from ..plumbing.debmeta import relation_names
from .kconfig import CROSS
from .targets import Target

CHROOT_RECIPE = 2
# binutils: kbuild's cc-option probes run plain `as`; *-for-host compilers bring only the
# triplet-prefixed one, and a failed probe silently drops flags such as -mfentry.
BASE_PACKAGES = ("make", "binutils")
MMDEBSTRAP_TIMEOUT_S = 1800

# Runs as: bash -c SCRIPT smcpatch ROOT NBINDS BIND... COMMAND...
_ENTER = r"""
set -eu
root=$1; nbinds=$2; shift 2
for _ in $(seq "$nbinds"); do
    mkdir -p "$root$1"; mount --bind "$1" "$root$1"; shift
done
mount -t proc proc "$root/proc"
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root "$@"
"""


def build_packages(apt: Apt, target: Target) -> list[str]:
    """What building against this kernel needs: the Depends of its headers and kbuild packages
    (the compiler, pahole, the libraries the kbuild helpers link), minus the kernel's own. A
    foreign kernel's gcc-N becomes Debian's cross gcc-N-<triplet> of the chroot's suite."""
    names = set(BASE_PACKAGES)
    cross = CROSS.get(target.arch) if target.foreign else None
    headers = f"{target.headers_package}:{target.arch}" if cross else target.headers_package
    for package in (headers, target.kbuild):
        fields = apt.fields(package, target.package_version)
        for name in relation_names(fields.get("Depends", "")):
            if cross and name.startswith("linux-compiler-"):
                continue  # the native compiler of the kernel's arch: the cross gcc replaces it
            if cross and re.fullmatch(r"gcc-\d+", name):
                name = f"{name}-{cross.triplet}"
            # linux-compiler-gcc-N-x86 brings the kernel's compiler (5.10, 6.1); the kernel's
            # own packages are bind-mounted, never installed
            if name and (not name.startswith("linux-") or name.startswith("linux-compiler-")):
                names.add(name)
    return sorted(names)


def cached_build_packages(cache: Cache, target: Target) -> list[str]:
    """build_packages, remembered per pinned package version (it cannot change)."""
    memo = cache.dir("chroots", f"packages-{target.key}.json")
    try:
        saved = json.loads(memo.read_text())
        if isinstance(saved, list) and all(isinstance(p, str) for p in saved):
            return saved
    except (OSError, ValueError):
        pass
    packages = build_packages(Apt(cache, suites=target.apt_suites,
                                  foreign_arches=(target.arch,) if target.foreign else ()),
                              target)
    tmp = memo.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(packages))
    tmp.replace(memo)
    return packages


# what making and entering a chroot of another suite needs on the host
TOOLS = (hostpkg.Tool("mmdebstrap", "mmdebstrap"), hostpkg.Tool("unshare", "util-linux"),
         hostpkg.Tool("mount", "mount"))  # a minimal system may lack mount (not Essential)


def ensure_mmdebstrap() -> None:
    hostpkg.ensure(TOOLS, "tools for builds in other suites' chroots")


def ensure_chroot(cache: Cache, suite: str, packages: list[str]) -> Path:
    """The root of a minimal chroot of `suite` with `packages`, made once and cached."""
    if os.geteuid() != 0:
        raise ToolMissing(f"building in a {suite} chroot needs root (mmdebstrap, mount, chroot)")
    lines = mirror_lines(host_sources(), _suite_set(suite))
    key = hash_inputs(CHROOT_RECIPE, suite, _strip_hosts(lines))
    entry = cache.dir("chroots", suite)
    with cache.lock(f"chroot-{suite}", wait_message=f"waiting for another run making the "
                                                    f"{suite} chroot ..."):
        manifest = read_manifest(entry) or {}
        if entry_is_current(entry, key):
            have = set(manifest.get("packages", []))
            if set(packages) <= have:
                return entry / "root"
            packages = sorted(have | set(packages))  # one chroot serves every kernel of a suite
        ensure_mmdebstrap()
        # replacing the chroot must wait for builds running in the old one (they hold it shared)
        with cache.lock(f"chroot-{suite}-in-use", wait_message=f"waiting for builds in the "
                        f"{suite} chroot to finish ..."), \
                atomic_dir(entry, key, {"packages": packages}) as tmp:
            log = tmp / "mmdebstrap.log"
            args = ["mmdebstrap", "--variant=apt", "--mode=root",
                    '--aptopt=Acquire::Check-Valid-Until "false"',
                    f"--include={','.join(packages)}", suite, str(tmp / "root"), *lines]
            with open(log, "w") as handle:
                code = proc.run(args, stdout=handle, stderr=proc.STDOUT,
                                timeout=MMDEBSTRAP_TIMEOUT_S, what=f"mmdebstrap {suite}",
                                error=BuildError).returncode
            if code != 0:
                kept = cache.dir("chroots", f"{suite}-failed.log")
                shutil.copy2(log, kept)
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                raise BuildError(f"cannot make the {suite} chroot (mmdebstrap exit {code}): "
                                 f"{tail}; full log: {kept}")
        return entry / "root"


def _suite_set(suite: str) -> tuple[str, ...]:
    """A stable suite gets its security updates too; unstable/testing names stand alone."""
    if suite in ("sid", "unstable", "testing", "experimental"):
        return (suite,)
    return (suite, f"{suite}-security")


def _strip_hosts(lines: list[str]) -> list[str]:
    return [re.sub(r"//[^/\s]+", "//mirror", line) for line in lines]


def command_in_chroot(root: Path, binds: list[Path], command: list[str]) -> list[str]:
    """argv that runs `command` inside `root` with `binds` mounted at their own paths."""
    hostpkg.ensure(TOOLS[1:], "tools for builds in other suites' chroots", install=False)
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", _ENTER, "smcpatch",
            str(root), str(len(binds)), *[str(b) for b in binds], *command]
