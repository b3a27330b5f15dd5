"""Where a kernel's module is built: with the kernel's own compiler, found by itself.

The compiler is read from the kernel (CONFIG_CC_VERSION_TEXT, e.g. ``gcc-10 (Debian 10.2.1-6)
10.2.1``). The host builds when it has that exact compiler, or its own release offers it (then the
build stage installs it); otherwise a cached chroot of the release whose compiler it is (bullseye's
gcc-10, trixie's gcc-14, sid's gcc-16, ...), found in the archive, not in a list. A kernel built by
a compiler the archive no longer has gets the nearest one of the same major, and the report says so.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ToolMissing
from ..pipeline.build import KernelConfig
from ..plumbing import hostpkg
from ..plumbing.suites import release_of
from .archive import Archive

_DEBIAN_VERSION = re.compile(r"\(Debian ([^)]+)\)")


@dataclass
class Choice:
    suite: str  # "" = the host; else the release whose chroot builds it
    compiler: str  # e.g. gcc-10 10.2.1-6
    notes: list[str] = field(default_factory=list)


def kernel_compiler(config: KernelConfig) -> tuple[str, int | None, str | None]:
    """(command, gcc major, Debian version) of the compiler that built the kernel."""
    text = config.get("CONFIG_CC_VERSION_TEXT") or ""
    command = config.compiler_command
    major = re.search(r"gcc-(\d+)$", command)
    version = _DEBIAN_VERSION.search(text)
    return command, int(major.group(1)) if major else None, version.group(1) if version else None


def host_has(command: str, debian_version: str | None) -> bool:
    path = hostpkg.which(command)
    if path is None:
        return False
    if debian_version is None:  # not a Debian gcc: nothing finer to compare
        return True
    first = subprocess.run([path, "--version"], capture_output=True, text=True,
                           check=False).stdout.partition("\n")[0]
    return f"(Debian {debian_version})" in first


def choose(config: KernelConfig, archive_for: Callable[[], Archive],
           hosts_release: bool = False) -> Choice:
    """The host or a release's chroot; `archive_for` is called only when the host won't do.

    hosts_release: the kernel comes from the host's own release (bookworm, -security,
    -backports on a bookworm host), whose compiler the host has or can install."""
    command, major, version = kernel_compiler(config)
    label = f"gcc-{major} {version}" if major else command
    if hosts_release or host_has(command, version):
        return Choice("", label)
    if major is None or version is None:
        return Choice("", label, [f"the kernel's compiler ({command}) is not a Debian gcc-N: "
                                  "building with the host's"])
    archive = archive_for()
    offers = archive.offers([f"gcc-{major}"])
    exact = [o for o in offers if o.version == version]
    if any(release_of(o.suite) in archive.host_releases for o in exact):
        return Choice("", label)  # the host's own release has it: the build stage installs it
    if exact:
        return Choice(release_of(exact[0].suite), label)
    if offers:
        nearest = offers[0]
        return Choice(release_of(nearest.suite), f"gcc-{major} {nearest.version}",
                      [f"the kernel was built with {label}, which the archive no longer has: "
                       f"building with gcc-{major} {nearest.version} of {nearest.suite}"])
    raise ToolMissing(f"the kernel was built with {label} and no suite of the archive "
                      f"({', '.join(archive.suites)}) has gcc-{major}")
