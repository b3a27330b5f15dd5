"""Kernel targets: the default matrix in kernels.toml and the resolution of a user's --kernel
(the one place where the kernel a user means is worked out: the matrix first, then the archive)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data import DEFAULT_MATRIX
from ..errors import BadInput, ConfigError, FetchError
from ..plumbing.cache import Cache

if TYPE_CHECKING:
    from .archive import Archive

# Debian's architectures that ship smc.ko, and their kernel flavours (the first is the plain one)
ARCH_FLAVOURS: dict[str, tuple[str, ...]] = {
    "amd64": ("amd64", "cloud-amd64", "rt-amd64"),
    "arm64": ("arm64", "cloud-arm64", "rt-arm64"),
    "s390x": ("s390x",),
}
ARCHES = tuple(ARCH_FLAVOURS)
HOST_ARCH = "amd64"  # the build host's Debian architecture (kbuild's helpers run there)
FLAVOURS = ARCH_FLAVOURS["amd64"]
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
        return f"{self.package_version}_{self.flavour}"

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


def default_matrix_path() -> Path:
    """kernels.toml, shipped in the package (smcpatch/data/kernels.toml)."""
    return DEFAULT_MATRIX


def load_matrix(path: Path | None = None) -> list[Target]:
    path = path or default_matrix_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"kernel matrix {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"kernel matrix {path} is not valid TOML: {exc}") from exc
    entries = data.get("kernel")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"kernel matrix {path} has no [[kernel]] entries")
    defaults = data.get("defaults", {})
    return [_target_from(entry, defaults, path) for entry in entries]


_REQUIRED = ("version", "package_version", "abi", "series")


def _target_from(entry: dict[str, Any], defaults: dict[str, Any], path: Path) -> Target:
    merged = {**defaults, **entry}
    missing = [k for k in _REQUIRED if k not in merged]
    if missing:
        raise ConfigError(f"{path}: kernel entry {entry.get('version', '?')} lacks "
                          f"{', '.join(missing)}")
    known = set(Target.__dataclass_fields__) - {"extra"}
    unknown = {k: v for k, v in merged.items() if k not in known}
    fields: dict[str, Any] = {k: str(v) for k, v in merged.items() if k in known}
    suites = merged.get("apt_suites", [])
    if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
        raise ConfigError(f"{path}: kernel {merged['version']}: apt_suites must be a list of names")
    fields["apt_suites"] = tuple(suites)
    arches = merged.get("arches", list(ARCHES))
    if not isinstance(arches, list) or not set(arches) <= set(ARCHES) or not arches:
        raise ConfigError(f"{path}: kernel {merged['version']}: arches must be a list of "
                          f"{', '.join(ARCHES)}")
    fields["arches"] = tuple(arches)
    fields["in_default"] = merged.get("in_default", True) is True
    # a pinned build_env overrides; without one the kernel's own compiler decides (buildenv)
    fields["auto_build_env"] = not merged.get("build_env")
    target = Target(**fields, extra=unknown)
    if target.flavour not in ALL_FLAVOURS:
        raise ConfigError(f"{path}: kernel {target.version}: unknown flavour {target.flavour!r}")
    if target.expect is not None and target.expect not in EXPECTED_STATES:
        raise ConfigError(f"{path}: kernel {target.version}: expect must be one of "
                          f"{EXPECTED_STATES}")
    return target


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


# what --kernel takes: an upstream version (6.12.95; the matrix's 6.12.107+deb13), a Debian
# package version (6.12.95-1~bpo12+1) or a kernel release as `uname -r` prints it
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.\d+[0-9A-Za-z.+~-]*|(?:~rc\d+)?-[0-9A-Za-z.+~-]+)$")


def parse_version(text: str) -> tuple[str, str]:
    """'6.1.176' → ('6.1', '6.1.176'); also a Debian version or a kernel release; refuses
    anything else (a bare series, words, shell syntax)."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise BadInput(f"{text!r} is not a kernel version like 6.1.176, 6.12.95-1~bpo12+1 or "
                       "6.12.95+deb12-amd64")
    return f"{match.group(1)}.{match.group(2)}", text.strip()


def select(matrix: list[Target], versions: list[str], flavour: str,
           arches: tuple[str, ...] = (HOST_ARCH,)) -> list[Target]:
    """Targets for the user's --kernel list (all of the matrix when empty), in the given flavour
    of each architecture.

    Versions outside the matrix are not returned: `unmatched` names them, so that the caller can
    resolve them against the archive.
    """
    flavours = flavours_for(flavour, arches)
    if "all" in versions or not versions:  # the matrix's own runs: where the suite serves it
        chosen = [t for t in matrix if "all" in versions or t.in_default]
        return [t.with_flavour(f) for t in chosen for f in flavours if arch_of(f) in t.arches]
    for version in versions:
        parse_version(version)
    found = [t for t in matrix if any(v in (t.version, t.package_version) for v in versions)]
    return [t.with_flavour(f) for t in found for f in flavours]


def unmatched(matrix: list[Target], versions: list[str]) -> list[str]:
    return [v for v in versions
            if v != "all" and not any(v in (t.version, t.package_version) for t in matrix)]


# -- the kernels a user names: the matrix, else the archive ------------------------------------
def resolve(cache: Cache, kernels: list[str], flavour: str, matrix_path: Path | None = None,
            suite: str | None = None,
            archive_for: Callable[[Cache], Archive] | None = None,
            arches: tuple[str, ...] = (HOST_ARCH,)) -> list[Target]:
    """Matrix entries for known versions; the archive's for the others (bad input if absent)."""
    matrix = load_matrix(matrix_path)
    chosen = select(matrix, kernels, flavour, arches)
    missing = unmatched(matrix, kernels)
    if missing:
        from .archive import Archive

        archive = (archive_for or Archive)(cache)
        archive.update()
        for version in missing:
            try:
                found = archive.resolve(version, "amd64", suite)
            except FetchError as exc:  # say what the archive has instead
                known = ", ".join(t.version for t in matrix)
                raise BadInput(f"unknown kernel {version}: not in kernels.toml ({known}) and "
                               f"{exc}") from exc
            # a kernel release (6.12.95+deb12-cloud-arm64) names its flavour itself
            flavours = (found.flavour,) if found.flavour != HOST_ARCH and not flavour \
                else flavours_for(flavour, arches)
            chosen.extend(found.with_flavour(f) for f in flavours)
    return chosen
