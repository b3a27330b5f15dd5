"""Report stage: per-target results as JSON (for machines) and a table (for people).

JSON schema "smcpatch-report/1" (documented in README.md): a top-level object with `schema`,
`tool_version`, `generated`, `ok` and `targets`, a list of TargetReport.to_json() objects.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadInput
from ..inspection import ModuleInfo
from ..kernels.targets import Target
from .classify import FixState

SCHEMA = "smcpatch-report/1"


@dataclass
class ModuleReport:
    path: str
    verdict: str
    reasons: list[str]
    vermagic: str | None
    has_dwarf: bool
    evidence: dict[str, Any]

    @classmethod
    def from_info(cls, info: ModuleInfo, path: Path) -> ModuleReport:
        ev = info.evidence
        return cls(
            path=str(path),
            verdict=ev.verdict,
            reasons=list(ev.reasons),
            vermagic=info.vermagic,
            has_dwarf=info.has_dwarf,
            evidence=evidence_json(info),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evidence_json(info: ModuleInfo) -> dict[str, Any]:
    ev = info.evidence

    def sites(items: Any) -> list[dict[str, Any]]:
        return [{"fragment": s.fragment, "offset": s.offset, "target": s.target} for s in items]

    return {
        "function": ev.function,
        "fragments": dict(ev.fragments),
        "call_targets": sorted({s.target for s in ev.calls}),
        "rcu_read_lock_sites": sites(ev.rcu_lock_sites),
        "rcu_read_unlock_sites": sites(ev.rcu_unlock_sites),
        "dst_reference_sites": sites(ev.dst_ref_sites),
        "dwarf_inlined": ev.dwarf_inlined,
    }


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    message: str  # why it failed (shown only then)


@dataclass
class TargetReport:
    version: str
    package_version: str
    flavour: str
    release: str
    suite: str
    expect: str | None
    arch: str = "amd64"  # the kernel's Debian architecture (amd64, arm64, s390x)
    expect_from: str = "kernels.toml"  # or Debian's changelog (kernels resolved from the archive)
    source_state: str = "unknown"
    fixes: list[dict[str, str]] = field(default_factory=list)
    patch: str | None = None  # applied | already-present
    before_variant: str | None = None  # as-shipped | reverted-for-before
    before: ModuleReport | None = None
    after: ModuleReport | None = None
    shipped: ModuleReport | None = None
    shipped_same_as_after: bool | None = None
    shipped_same_as_before: bool | None = None
    vermagic_ok: bool | None = None
    vermagic_detail: str = ""
    modversions_ok: bool | None = None
    modversions_mismatches: list[str] = field(default_factory=list)
    changed_functions: list[str] = field(default_factory=list)
    expected_changed_functions: list[str] = field(default_factory=list)
    # differ in bytes but not in instructions: only alignment padding moved (gcc-14)
    layout_only_functions: list[str] = field(default_factory=list)
    # functions a patch touches that have no symbol of their own (inlined into their callers)
    inlined_patched_functions: list[str] = field(default_factory=list)
    # --fix all: the sibling fixes' functions, judged like smc_clc_prfx_match
    sibling_verdicts: list[dict[str, str]] = field(default_factory=list)
    recompiled_for_after: list[str] = field(default_factory=list)
    compiler: str = ""
    build_env: str = "host"  # host, or the suite of the chroot the module was built in
    compile_only: bool = False  # SMC off in the kernel's config: compiled and inspected only
    # --load: the after-module insmod-ed into its own kernel in a QEMU guest (loadcheck)
    load: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    timings_detail: dict[str, float] = field(default_factory=dict)
    from_cache: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    error_detail: str = ""  # e.g. the tail of a failed build's log
    ok: bool = False

    @classmethod
    def for_target(cls, target: Target) -> TargetReport:
        return cls(version=target.version, package_version=target.package_version,
                   flavour=target.flavour, release=target.release, suite=target.suite,
                   expect=target.expect, arch=target.arch)

    def set_states(self, states: list[FixState]) -> None:
        self.fixes = [{"id": s.fix_id, "state": s.state, "variant": s.variant.name,
                       "functions": ",".join(s.variant.functions), "detail": s.detail}
                      for s in states]
        kinds = {s.state for s in states}
        if "unknown" in kinds:
            self.source_state = "unknown"
        elif kinds == {"vulnerable"}:
            self.source_state = "vulnerable"
        elif kinds == {"fixed"}:
            self.source_state = "fixed"
        else:
            self.source_state = "partially-fixed"

    @property
    def changed_functions_ok(self) -> bool:
        """Changed code is exactly the patched functions; a fragment the compiler split off
        (smc_clc_prfx_match.cold, .part.0, .isra.0) belongs to its function."""
        changed = {name.split(".", 1)[0] for name in self.changed_functions}
        return changed == set(self.expected_changed_functions)

    def checks(self) -> list[Check]:
        """Every check of this target, named (the JUnit test cases), each able to fail."""
        checks = [
            Check("completed", self.error is None, f"error: {self.error}"),
            Check("after-module fixed", self.after is not None and self.after.verdict == "fixed",
                  f"after-module verdict is {self.after.verdict if self.after else 'missing'}"),
            Check("before-module vulnerable",
                  self.before is not None and self.before.verdict == "vulnerable",
                  f"before-module verdict is {self.before.verdict if self.before else 'missing'}"),
            Check("vermagic", self.vermagic_ok is True or self.compile_only,
                  f"vermagic mismatch: {self.vermagic_detail}"),
            Check("modversions", self.modversions_ok is True or self.compile_only,
                  f"modversions mismatch: {', '.join(self.modversions_mismatches[:5])}"),
            Check("only the patched functions changed", self.changed_functions_ok,
                  f"changed functions {self.changed_functions} != patched "
                  f"{self.expected_changed_functions}"),
        ]
        for sibling in self.sibling_verdicts:
            checks.append(Check(
                f"{sibling['fix']} {sibling['function']}",
                sibling["before"] == "vulnerable" and sibling["after"] == "fixed",
                f"{sibling['fix']}: {sibling['function']} is {sibling['before']} before and "
                f"{sibling['after']} after"))
        if self.load is not None:
            checks.append(Check("after-module loads", self.load.get("loaded") is True,
                                f"after-module load check: {self.load.get('detail', 'no result')}"))
        if self.expect is not None and self.source_state in ("vulnerable", "fixed"):
            checks.append(Check("source state as expected", self.expect == self.source_state,
                                f"source is {self.source_state} but {self.expect_from} says "
                                f"{self.expect}"))
        if self.shipped is not None:
            shipped_should = "fixed" if self.source_state == "fixed" else "vulnerable"
            checks.append(Check("Debian's module", self.shipped.verdict == shipped_should,
                                f"Debian's shipped smc.ko is {self.shipped.verdict}, source says "
                                f"{shipped_should}"))
        return checks[:1] if self.error is not None else checks

    def finish(self) -> None:
        """Decide `ok` from checks that can each fail; list every failed one in problems."""
        self.problems = [c.message for c in self.checks() if not c.passed]
        self.ok = not self.problems

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetReport:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for side in ("before", "after", "shipped"):
            if isinstance(known.get(side), dict):
                known[side] = ModuleReport(**known[side])
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            data[key] = value.to_json() if isinstance(value, ModuleReport) else value
        data["changed_functions_ok"] = self.changed_functions_ok
        return data


def document(reports: list[TargetReport]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "tool_version": __version__,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ok": bool(reports) and all(r.ok for r in reports),
        "targets": [r.to_json() for r in reports],
    }


def merge(paths: list[Path]) -> list[TargetReport]:
    """The targets of several JSON reports (e.g. one per CI job), in one list.

    A target present in more than one report keeps the last one read (files sorted by name).
    """
    merged: dict[tuple[str, str], TargetReport] = {}
    for path in sorted(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path}: not a readable JSON report ({exc})") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise BadInput(f"{path}: not an smcpatch report (schema {SCHEMA} expected)")
        try:
            for entry in data["targets"]:
                target = TargetReport.from_json(entry)
                merged[(target.package_version, target.flavour)] = target
        except (KeyError, TypeError) as exc:
            raise BadInput(f"{path}: malformed report entry ({exc})") from exc
    if not merged:
        raise BadInput("no report targets found to merge")
    return list(merged.values())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a report."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
