"""Kernel targets: the default matrix in kernels.toml and the resolution of a user's --kernel
(the one place where the kernel a user means is worked out: the matrix first, then the archive)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DEFAULT_MATRIX
from ..errors import BadInput, ConfigError, FetchError
from ..plumbing.apt import Apt
from ..plumbing.cache import Cache

FLAVOURS = ("amd64", "cloud-amd64", "rt-amd64")
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
    fixed_release: str = ""  # a user's tree: the release its build dir says, not abi-flavour
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def release(self) -> str:
        return self.fixed_release or f"{self.abi}-{self.flavour}"

    @property
    def key(self) -> str:
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
    fields["in_default"] = merged.get("in_default", True) is True
    target = Target(**fields, extra=unknown)
    if target.flavour not in FLAVOURS:
        raise ConfigError(f"{path}: kernel {target.version}: unknown flavour {target.flavour!r}")
    if target.expect is not None and target.expect not in EXPECTED_STATES:
        raise ConfigError(f"{path}: kernel {target.version}: expect must be one of "
                          f"{EXPECTED_STATES}")
    return target


def check_flavour(flavour: str) -> tuple[str, ...]:
    """The flavours a --flavour value names: one of FLAVOURS, or `all` of them."""
    if flavour == "all":
        return FLAVOURS
    if flavour not in FLAVOURS:
        raise BadInput(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)} or all")
    return (flavour,)


_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(\+deb\d+)?$")


def parse_version(text: str) -> tuple[str, str]:
    """'6.1.176' → ('6.1', '6.1.176'); refuses anything that isn't an upstream x.y.z version."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise BadInput(f"{text!r} is not a kernel version like 6.1.176 or 6.12.107")
    return f"{match.group(1)}.{match.group(2)}", text.strip()


def select(matrix: list[Target], versions: list[str], flavour: str) -> list[Target]:
    """Targets for the user's --kernel list (all of the matrix when empty), in the given flavour.

    Versions outside the matrix are not returned: `unmatched` names them, so that the caller can
    resolve them against the archive.
    """
    flavours = check_flavour(flavour)
    if "all" in versions:
        return [t.with_flavour(f) for t in matrix for f in flavours]
    for version in versions:
        parse_version(version)
    found = [t for t in matrix if (t.in_default if not versions else
                                   any(v in (t.version, t.package_version) for v in versions))]
    return [t.with_flavour(f) for t in found for f in flavours]


def unmatched(matrix: list[Target], versions: list[str]) -> list[str]:
    return [v for v in versions
            if v != "all" and not any(v in (t.version, t.package_version) for t in matrix)]


# -- the kernels a user names: the matrix, else the archive ------------------------------------
def resolve_from_archive(apt: Apt, version: str, flavour: str) -> Target:
    """Find the Debian packages of an upstream version that kernels.toml doesn't list."""
    series, upstream = parse_version(version)
    source = f"linux-source-{series}"
    available = apt.versions(source)
    if not available:
        raise FetchError(f"the archive has no {source}: no Debian kernel of series {series}")
    matching = [v for v in available if v.split("-")[0].split("+")[0] == upstream]
    if not matching:
        raise FetchError(f"kernel {version} is not in the archive; {source} versions available: "
                         f"{', '.join(available)}")
    package_version = matching[0]
    abi = _find_abi(apt, series, upstream, package_version)
    kbuild = f"linux-kbuild-{abi}"
    if apt.show(kbuild, package_version) is None:
        kbuild = f"linux-kbuild-{series}"
    return Target(version=version, package_version=package_version, abi=abi, series=series,
                  suite="archive", flavour=flavour, kbuild_package=kbuild,
                  notes="resolved from the archive (not pinned in kernels.toml)")


def _find_abi(apt: Apt, series: str, upstream: str, package_version: str) -> str:
    # ABI names look like 6.1.0-50 (6.1) or 6.12.107+deb12 (6.12)
    abi = rf"({re.escape(series)}\.0-[0-9]+|{re.escape(upstream)}\+deb[0-9]+)"
    pattern = rf"^linux-headers-{abi}-common$"
    for name in reversed(apt.search_names(pattern)):
        if package_version in apt.versions(name):
            return name.removeprefix("linux-headers-").removesuffix("-common")
    raise FetchError(f"no linux-headers-*-common package of version {package_version} found")


def resolve(cache: Cache, kernels: list[str], flavour: str,
            apt_factory: Callable[[Cache], Apt] = Apt,
            matrix_path: Path | None = None) -> list[Target]:
    """Matrix entries for known versions; archive lookups for the others (bad input if absent)."""
    matrix = load_matrix(matrix_path)
    chosen = select(matrix, kernels, flavour)
    missing = unmatched(matrix, kernels)
    if missing:
        apt = apt_factory(cache)
        apt.update()
        for version in missing:
            try:
                found = resolve_from_archive(apt, version, "amd64")
                chosen.extend(found.with_flavour(f) for f in check_flavour(flavour))
            except FetchError as exc:  # say what the archive has instead
                known = ", ".join(t.version for t in matrix)
                raise BadInput(f"unknown kernel {version}: not in kernels.toml ({known}) and "
                               f"{exc}") from exc
    return chosen
