"""A kernel target: one Debian kernel build of one flavour, its exact package versions and the
names derived from them; Debian's architectures and their flavours."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput

# Debian's architectures that ship smc.ko, and their kernel flavours (the first is the plain one)
ARCH_FLAVOURS: dict[str, tuple[str, ...]] = {
    "amd64": ("amd64", "cloud-amd64", "rt-amd64"),
    "arm64": ("arm64", "cloud-arm64", "rt-arm64"),
    "s390x": ("s390x",),
}
ARCHES = tuple(ARCH_FLAVOURS)
HOST_ARCH = "amd64"  # the build host's Debian architecture (kbuild's helpers run there)
ALL_FLAVOURS = tuple(f for flavours in ARCH_FLAVOURS.values() for f in flavours)
EXPECTED_STATES = ("vulnerable", "fixed")


@dataclass(frozen=True)
class Target:
    """One Debian kernel build: exact package versions and the names derived from them."""

    version: str  # upstream version as the user names it, e.g. "6.1.176"
    package_version: str  # Debian version, e.g. "6.1.176-1" or "6.12.107-1~deb12u1"
    abi: str  # "6.1.0-50" or "6.12.107+deb12"
    series: str  # "6.1" / "6.12": names linux-source-<series>
    suite: str = "bookworm"
    flavour: str = "amd64"
    compiler: str = "gcc-12"
    kbuild_package: str = ""
    expect: str | None = None  # what the archive's changelog says; checked, never used to decide
    notes: str = ""
    # The suite whose userland builds the module (a cached chroot), when the host's can't:
    # trixie's kernels need gcc-14, sid's kbuild tools need a newer glibc. "" = the host.
    build_env: str = ""
    # Suites the packages come from beyond the host's apt sources (same mirrors, read at run time).
    apt_suites: tuple[str, ...] = ()
    in_default: bool = True  # part of `inv verify` with no --kernel
    arches: tuple[str, ...] = ARCHES  # where the suite serves it (the default run skips others)
    # no pinned build_env: the build environment follows the kernel's own compiler (buildenv)
    auto_build_env: bool = False
    fixed_release: str = ""  # a user's tree: the release its build dir says, not abi-flavour
    tree: Path | None = None  # a user's tree (--source): its sources ...
    tree_kdir: Path | None = None  # ... and its build directory (--kdir)
    tree_id: str = ""  # names that tree in cache keys: two trees of one release never mix
    # the mirrors serve this kernel's image but not its sources or headers: Debian's module
    # and changelog are judged, nothing is built
    judge_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def arch(self) -> str:
        """The Debian architecture, named by the flavour (arm64, cloud-arm64, rt-arm64: arm64)."""
        return arch_of(self.flavour)

    @property
    def foreign(self) -> bool:
        """Built by a cross compiler: the kernel is not of the build host's architecture."""
        return self.arch != HOST_ARCH

    @property
    def release(self) -> str:
        return self.fixed_release or f"{self.abi}-{self.flavour}"

    @property
    def key(self) -> str:
        """6.1.176-1_amd64, 6.1.176-1_cloud-arm64: the flavour names the arch too."""
        return f"{self.package_version}_{self.flavour}" + (f"_{self.tree_id}" if self.tree_id
                                                           else "")

    @property
    def source_package(self) -> str:
        return f"linux-source-{self.series}"

    @property
    def headers_package(self) -> str:
        return f"linux-headers-{self.release}"

    @property
    def common_headers_package(self) -> str:
        suffix = "common-rt" if self.flavour.startswith("rt") else "common"
        return f"linux-headers-{self.abi}-{suffix}"

    @property
    def image_package(self) -> str:
        return f"linux-image-{self.release}"

    @property
    def kbuild(self) -> str:
        return self.kbuild_package or f"linux-kbuild-{self.series}"

    def with_flavour(self, flavour: str) -> Target:
        return Target(**{**self.__dict__, "flavour": flavour})


def arch_of(flavour: str) -> str:
    """The architecture of a flavour: its last word (cloud-arm64 -> arm64)."""
    arch = flavour.rsplit("-", 1)[-1]
    return arch if arch in ARCH_FLAVOURS else HOST_ARCH


def check_arches(arches: list[str] | tuple[str, ...], flavour: str = "") -> tuple[str, ...]:
    """The architectures an --arch list names (`all` = every one); when empty, the one the
    --flavour names (cloud-arm64: arm64), else amd64."""
    if not arches:
        return (arch_of(flavour) if flavour in ALL_FLAVOURS else HOST_ARCH,)
    if "all" in arches:
        return ARCHES
    unknown = [a for a in arches if a not in ARCH_FLAVOURS]
    if unknown:
        raise BadInput(f"unknown architecture {unknown[0]!r}: choose {', '.join(ARCHES)} or all")
    return tuple(dict.fromkeys(arches))


def check_flavour(flavour: str, arch: str = HOST_ARCH) -> tuple[str, ...]:
    """The flavours of `arch` a --flavour value names: a flavour (cloud-arm64), its kind without
    the arch (cloud, rt), the arch's plain flavour (its name, or empty: the default), or `all`."""
    own = ARCH_FLAVOURS[arch]
    if flavour == "all":
        return own
    if not flavour:
        return own[:1]
    named = flavour if flavour in own else f"{flavour}-{arch}"
    if named in own:
        return (named,)
    if flavour in ALL_FLAVOURS:
        raise BadInput(f"flavour {flavour!r} is not an {arch} flavour: {arch} has "
                       f"{', '.join(own)}")
    raise BadInput(f"unknown flavour {flavour!r} for {arch}: {arch} has {', '.join(own)} "
                   "(cloud and rt name those of its own), or all")


def flavours_for(flavour: str, arches: tuple[str, ...]) -> tuple[str, ...]:
    """Every flavour a --flavour and --arch pair names, arch by arch."""
    return tuple(f for arch in arches for f in check_flavour(flavour, arch))
