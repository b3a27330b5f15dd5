"""The fix signatures: one description per fix of the upstream series "net: Fix UAF of
sk_dst_get(sk)->dev", package data (``data/fixes/*.toml``, its README says each key), loaded
here once.  A signature says which module carries the fix, which functions it changes, where
their code is when the compiler inlined them, and what the vulnerable and the fixed code
reference; :func:`smcpatch.inspection.verdict.decide` judges every fix by it alike.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import FIXES_DIR
from ..errors import ConfigError

_COMMIT = re.compile(r"^[0-9a-f]{12}$")
_CVE = re.compile(r"^(CVE-\d{4}-\d{4,})?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class FixSignature:
    """How a binary shows one fix (see data/fixes/README.md for each field)."""

    id: str  # upstream commit, 12 hex digits
    cve: str  # "" when the fix has no CVE id
    series_id: str  # its id in data/patches/series, "" when smcpatch has no patch for it
    title: str
    module: str
    source: str
    functions: tuple[str, ...]
    inlined_into: dict[str, tuple[str, ...]]
    debian_fixed: dict[str, str]
    vulnerable_references: frozenset[str]
    vulnerable_inlined: frozenset[str]
    fixed_inlined: frozenset[str]
    rcu_lock: frozenset[str]
    rcu_unlock: frozenset[str]
    rcu_inlined: frozenset[str]

    @property
    def label(self) -> str:
        """What a person calls it: the CVE id, else the commit."""
        return self.cve or self.id

    @property
    def source_file(self) -> str:
        """The DWARF compile unit's file name (``smc_clc.c``)."""
        return self.source.rsplit("/", 1)[-1]


@functools.cache
def load_fixes(directory: Path = FIXES_DIR) -> tuple[FixSignature, ...]:
    """Every signature of ``directory``, in file-name order (smc's CVE-2025-40168 first)."""
    files = sorted(Path(directory).glob("*.toml"), key=_order)
    if not files:
        raise ConfigError(f"{directory}: no fix signatures (*.toml)")
    fixes = tuple(_read(path) for path in files)
    ids = [f.id for f in fixes]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{directory}: two signatures of the same commit")
    return fixes


def fixes_for_module(name: str, directory: Path = FIXES_DIR) -> list[FixSignature]:
    """The signatures of the fixes a module carries, by its name (``smc``, ``tls``)."""
    return [f for f in load_fixes(directory) if f.module == name]


def modules(directory: Path = FIXES_DIR) -> list[str]:
    """The modules some fix is in, in order (``smc``, ``tls``)."""
    return list(dict.fromkeys(f.module for f in load_fixes(directory)))


def _order(path: Path) -> tuple[int, str]:
    # the fix smcpatch started from leads (the top-level verdict of an smc.ko is its verdict)
    return (0 if path.stem == "CVE-2025-40168" else 1, path.name)


def _read(path: Path) -> FixSignature:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the fix signature: {exc}") from exc
    try:
        return _signature(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed fix signature: {exc}") from exc


def _signature(raw: dict[str, Any]) -> FixSignature:
    vuln, fixed = raw["vulnerable"], raw["fixed"]
    functions = _names(raw["functions"], "functions")
    inlined_into = {fn: tuple(_names(callers, fn))
                    for fn, callers in raw.get("inlined_into", {}).items()}
    if not functions or not set(inlined_into) <= set(functions):
        raise ValueError("inlined_into names a function the fix does not change")
    sig = FixSignature(
        id=_text(raw, "id", _COMMIT), cve=_text(raw, "cve", _CVE),
        series_id=str(raw["series_id"]), title=_text(raw, "title"),
        module=_text(raw, "module", _NAME), source=_text(raw, "source"),
        functions=tuple(functions), inlined_into=inlined_into,
        debian_fixed={str(k): str(v) for k, v in raw["debian"]["fixed"].items()},
        vulnerable_references=frozenset(_names(vuln["references"], "references")),
        vulnerable_inlined=frozenset(_names(vuln["inlined"], "inlined")),
        fixed_inlined=frozenset(_names(fixed["inlined"], "inlined")),
        rcu_lock=frozenset(_names(fixed["rcu_lock"], "rcu_lock")),
        rcu_unlock=frozenset(_names(fixed["rcu_unlock"], "rcu_unlock")),
        rcu_inlined=frozenset(_names(fixed["rcu_inlined"], "rcu_inlined")),
    )
    if not sig.vulnerable_references:
        raise ValueError("vulnerable.references is empty: nothing would tell the two apart")
    return sig


def _text(raw: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = raw[key]
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise ValueError(f"{key} = {value!r}")
    return value


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME.match(v)
                                              for v in value):
        raise ValueError(f"{key} must be a list of C identifiers, not {value!r}")
    return list(value)
