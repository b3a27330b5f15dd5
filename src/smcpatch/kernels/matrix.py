"""The default kernel matrix (kernels.toml, package data): real Debian kernels pinned to exact
package versions, and the targets a --kernel list picks from it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..data import DEFAULT_MATRIX
from ..errors import ConfigError
from ..plumbing.files import MB, read_input_text
from .targets import (
    ALL_FLAVOURS,
    ARCHES,
    EXPECTED_STATES,
    HOST_ARCH,
    Target,
    arch_of,
    flavours_for,
)
from .versions import parse

# the kernel the guest commands (bench, race) boot by default: vulnerable, in the host's release
GUEST_KERNEL = "6.12.107"


def default_matrix_path() -> Path:
    """kernels.toml, shipped in the package (smcpatch/data/kernels.toml)."""
    return DEFAULT_MATRIX


def load_matrix(path: Path | None = None) -> list[Target]:
    path = path or default_matrix_path()
    if not path.exists():
        raise ConfigError(f"kernel matrix {path} not found")
    try:
        data = tomllib.loads(read_input_text(path, "kernel matrix (kernels.toml)", 1 * MB))
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
        parse(version)
    found = [t for t in matrix if any(v in (t.version, t.package_version) for v in versions)]
    return [t.with_flavour(f) for t in found for f in flavours]


def unmatched(matrix: list[Target], versions: list[str]) -> list[str]:
    return [v for v in versions
            if v != "all" and not any(v in (t.version, t.package_version) for t in matrix)]
