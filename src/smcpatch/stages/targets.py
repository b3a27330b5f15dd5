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
    # no pinned build_env: the build environment follows the kernel's own compiler (buildenv)
    auto_build_env: bool = False
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
    # a pinned build_env overrides; without one the kernel's own compiler decides (buildenv)
    fields["auto_build_env"] = not merged.get("build_env")
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
def resolve(cache: Cache, kernels: list[str], flavour: str, matrix_path: Path | None = None,
            suite: str | None = None,
            archive_for: Callable[[Cache], Archive] | None = None) -> list[Target]:
    """Matrix entries for known versions; the archive's for the others (bad input if absent)."""
    matrix = load_matrix(matrix_path)
    chosen = select(matrix, kernels, flavour)
    missing = unmatched(matrix, kernels)
    if missing:
        from .archive import Archive  # only for kernels outside the matrix

        archive = (archive_for or Archive)(cache)
        archive.update()
        for version in missing:
            try:
                found = archive.resolve(version, "amd64", suite)
            except FetchError as exc:  # say what the archive has instead
                known = ", ".join(t.version for t in matrix)
                raise BadInput(f"unknown kernel {version}: not in kernels.toml ({known}) and "
                               f"{exc}") from exc
            flavours = (found.flavour,) if found.flavour != "amd64" and flavour == "amd64" \
                else check_flavour(flavour)
            chosen.extend(found.with_flavour(f) for f in flavours)
    return chosen
