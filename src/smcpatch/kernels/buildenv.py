"""Where a kernel's module is built: with the kernel's own compiler, decided when the kernel is
resolved (before anything is fetched).

A kernel of the host's own release (bookworm, -security, -backports on a bookworm host) builds on
the host, whose release has its compiler. Any other kernel names its compiler in its headers
package's Depends (gcc-14, or linux-compiler-gcc-10-x86); it is built in a cached chroot of its
own release when that release offers the compiler (trixie's gcc-14, bullseye's gcc-10, sid's
gcc-15), on the host when the host's release offers it, else in the release that offers it
(found in the archive, not in a list). The build stage then names the exact compiler it ran and
says when it is not the very one of CONFIG_CC_VERSION_TEXT.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from ..errors import ToolMissing
from ..plumbing.debmeta import relation_names
from ..plumbing.suites import host_releases, release_of
from .archive import Archive
from .targets import Target

_GCC = re.compile(r"^(?:linux-compiler-)?gcc-(\d+)(?:-\w+)?$")


def settle(target: Target, archive_for: Callable[[], Archive]) -> Target:
    """The target with its build environment decided ("" = the host, or a release whose chroot
    builds it). A pinned build_env is kept; `archive_for` is called only when the host's release
    is not the kernel's."""
    if target.build_env or not target.auto_build_env:
        return target
    if release_of(target.suite) in host_releases():
        return target
    archive = archive_for()
    major = compiler_major(archive, target)
    if major is None:
        return target  # no Debian gcc-N named: the host's compiler, and the build says so
    own = release_of(target.suite)
    releases = [release_of(o.suite) for o in archive.offers([f"gcc-{major}"])]
    note = ""
    if own in releases:
        chosen = own
    elif any(r in archive.host_releases for r in releases):
        chosen = ""
    elif releases:
        chosen = releases[0]
        note = (f"{own} no longer offers gcc-{major}, the kernel's compiler: building with "
                f"{chosen}'s")
    else:
        raise ToolMissing(f"kernel {target.version} was built with gcc-{major} and no suite of "
                          f"the archive ({', '.join(archive.suites)}) has gcc-{major}")
    notes = "; ".join(n for n in (target.notes, note) if n)
    return dataclasses.replace(target, build_env=chosen, compiler=f"gcc-{major}", notes=notes)


def compiler_major(archive: Archive, target: Target) -> int | None:
    """The gcc major the kernel's headers package depends on (gcc-14, linux-compiler-gcc-10-x86)."""
    # a foreign kernel's headers are not in the host arch's lists: its host-arch twin of the
    # same ABI was built by the same compiler
    name = f"linux-headers-{target.abi}-amd64" if target.foreign else target.headers_package
    depends = archive.apt.fields(name, target.package_version).get("Depends", "")
    for package in relation_names(depends):
        if match := _GCC.match(package):
            return int(match.group(1))
    return None
