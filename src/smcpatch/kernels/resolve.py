"""The kernels a user means, worked out in one place for every command: --kernel (read by
kernels.versions), --arch, --flavour, --suite and --matrix, or a tree of their own (--source and
--kdir). The matrix answers first, then the archive of every suite the host's mirrors serve; each
target comes back finished, its build environment decided (kernels.buildenv).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import BadInput, FetchError
from ..plumbing.cache import Cache
from ..plumbing.suites import served_suites
from . import buildenv, matrix
from .archive import Archive
from .kconfig import KernelConfig
from .request import KernelRequest
from .targets import ARCH_FLAVOURS, HOST_ARCH, Target, flavours_for
from .versions import parse


def resolve(cache: Cache, request: KernelRequest,
            archive_for: Callable[[Cache], Archive] | None = None) -> list[Target]:
    """Matrix entries for the versions it pins; the archive's for the others (bad input when the
    archive has none). Every target with its build environment settled."""
    arches = request.check()
    if request.user_tree:
        assert request.source is not None and request.kdir is not None
        return [local_target(request.source, request.kdir)]
    kernels = list(request.kernels)
    if request.suite is not None:
        _check_served(cache, request.suite)
    pinned = matrix.load_matrix(request.matrix)
    if request.suite is not None:  # --suite picks the archive's kernel of that suite
        pinned = [t for t in pinned if t.suite == request.suite] or (pinned if not kernels
                                                                     else [])
    chosen = matrix.select(pinned, kernels, request.flavour, arches)
    missing = matrix.unmatched(pinned, kernels)
    archive: Archive | None = None

    def the_archive() -> Archive:
        nonlocal archive
        if archive is None:
            archive = (archive_for or Archive)(cache)
            archive.update()
        return archive

    for version in missing:
        try:
            found = the_archive().resolve(parse(version), HOST_ARCH, request.suite)
        except FetchError as exc:  # say what the archive has instead
            known = ", ".join(t.version for t in pinned)
            raise BadInput(f"unknown kernel {version}: not in kernels.toml ({known}) and "
                           f"{exc}") from exc
        # a kernel release (6.12.95+deb12-cloud-arm64) names its flavour itself
        flavours = ((found.flavour,) if found.flavour != HOST_ARCH and not request.flavour
                    else flavours_for(request.flavour, arches))
        chosen.extend(found.with_flavour(f) for f in flavours)
    return [buildenv.settle(t, the_archive) for t in chosen]


def _check_served(cache: Cache, suite: str) -> None:
    served = served_suites(cache)
    if suite not in served:
        raise BadInput(f"--suite {suite}: not a suite the host's mirrors serve "
                       f"({', '.join(served)})")


def local_target(source: Path, kdir: Path) -> Target:
    """A packager's own kernel tree (or just its net/smc) and a prepared build directory: the
    release from the build dir, the arch from its .config (a foreign tree is cross-built)."""
    source, kdir = source.expanduser().resolve(), kdir.expanduser().resolve()
    if not (source / "net" / "smc" / "smc_clc.c").is_file():
        raise BadInput(f"{source} has no net/smc/smc_clc.c: give a kernel tree containing net/smc")
    for needed in ("Makefile", ".config", "Module.symvers"):
        if not (kdir / needed).is_file():
            raise BadInput(f"{kdir} lacks {needed}: give a prepared kernel build/headers directory")
    release = kdir_release(kdir)
    arch = KernelConfig.read(kdir / ".config").arch
    flavour = ARCH_FLAVOURS[arch][0]
    # two trees of one release must never share a work dir: the key names the tree
    tree_id = hashlib.sha256(f"{source}\0{kdir}".encode()).hexdigest()[:10]
    return Target(version=release, package_version=release, abi=release, series="",
                  suite="local", flavour=flavour, notes=f"user tree {source}",
                  fixed_release=release, tree=source, tree_kdir=kdir, tree_id=tree_id)


def kdir_release(kdir: Path) -> str:
    """The release modules built here get in their vermagic: UTS_RELEASE, which is what the
    kernel checks (Debian's include/config/kernel.release says only the upstream version)."""
    uts = kdir / "include" / "generated" / "utsrelease.h"
    if uts.is_file():
        match = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text(errors="replace"))
        if match:
            return match.group(1)
    variables = kdir / ".kernelvariables"
    if variables.is_file():
        match = re.search(r"KERNELRELEASE\s*=\s*(\S+)", variables.read_text())
        if match:
            return match.group(1)
    release = kdir / "include" / "config" / "kernel.release"
    if release.is_file():
        return release.read_text().strip()
    raise BadInput(f"cannot tell the kernel release of {kdir} (no include/generated/utsrelease.h)")
