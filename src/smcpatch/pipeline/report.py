"""Report stage: what one target's run found (TargetReport) and the checks that decide it, each
able to fail. Written as JSON by outputs.jsonreport, shown by outputs.terminal."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..inspection import ModuleInfo, evidence_json, load_fixes
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
    # one verdict per fix of the series the module carries (inspection.FixResult.to_json);
    # empty in reports written before per-fix verdicts
    fixes: list[dict[str, Any]] = field(default_factory=list)

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
            fixes=[fix.to_json() for fix in info.fixes],
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleReport:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        missing = [k for k, f in cls.__dataclass_fields__.items()
                   if k not in known and f.default_factory is MISSING]
        if missing:
            raise BadInput(f"a module report lacks {', '.join(missing)}")
        for name, value in known.items():
            _check_type(name, value, cls.__dataclass_fields__[name].type)
        if known["verdict"] not in ("fixed", "vulnerable", "unknown"):
            raise BadInput(f"a module report's verdict is {known['verdict']!r}")
        if not all(isinstance(f, dict) and isinstance(f.get("verdict"), str)
                   for f in known.get("fixes", [])):
            raise BadInput("a module report's fixes are not each an object with a verdict")
        return cls(**known)

    def fix_verdict(self, fix: str) -> str | None:
        """The verdict on one fix (its commit), None when the module was not judged for it."""
        return next((str(f["verdict"]) for f in self.fixes if f.get("fix") == fix), None)


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
    # the linux-image package Debian's module came from (the -unsigned twin when the signed one
    # is absent), its SHA256 from the archive's index and the module's path in it: how VEX
    # names Debian's product
    image_package: str = ""
    image_sha256: str = ""
    image_module_path: str = ""
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
        checks += self._per_fix_checks()
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
        if self.error is not None:
            return checks[:1]
        if self.source_state == "not-served":
            return [checks[0], *self._judged_only_checks()]
        return checks

    def chosen_fixes(self) -> list[tuple[str, str]]:
        """(commit, label) of each fix chosen for the build that has a signature (a fix of the
        user's own series has none: its functions are judged by sibling_verdicts alone)."""
        by_series = {sig.series_id: sig for sig in load_fixes() if sig.series_id}
        return [(by_series[f["id"]].id, by_series[f["id"]].label) for f in self.fixes
                if f.get("id") in by_series]

    def _per_fix_checks(self) -> list[Check]:
        """Per fix chosen: our after-module fixed and our before-module vulnerable in it, by
        its signature (reports written before per-fix verdicts have none to check)."""
        checks = []
        for side, want in (("after", "fixed"), ("before", "vulnerable")):
            module = self.after if side == "after" else self.before
            if module is None or not module.fixes:
                continue
            for commit, label in self.chosen_fixes():
                got = module.fix_verdict(commit)
                checks.append(Check(f"{side}-module {want}: {label}", got == want,
                                    f"{side}-module is {got or 'not judged'} for {label}"))
        return checks

    def shipped_fixes(self) -> list[tuple[str, str]]:
        """Debian's module per fix: (label, verdict) of every fix it was judged for."""
        if self.shipped is None:
            return []
        return [(str(f.get("cve") or f.get("fix")), str(f["verdict"]))
                for f in self.shipped.fixes]

    def _judged_only_checks(self) -> list[Check]:
        """A kernel whose sources the mirrors do not serve: Debian's module judged, nothing
        verified (ok is false: no fixed module of ours exists for it)."""
        checks = [Check("sources served", False,
                        f"the mirrors serve {self.release}'s image but not its sources or "
                        "headers: Debian's module was judged, no fix was built or verified")]
        if self.shipped is not None and self.expect is not None:
            checks.append(Check("Debian's changelog agrees with its module",
                                self.shipped.verdict == self.expect,
                                f"Debian's shipped smc.ko is {self.shipped.verdict}, "
                                f"{self.expect_from} says {self.expect}"))
        return checks

    def finish(self) -> None:
        """Decide `ok` from checks that can each fail; list every failed one in problems."""
        self.problems = [c.message for c in self.checks() if not c.passed]
        self.ok = not self.problems

    @property
    def shipped_state(self) -> str:
        """What the machines run: Debian's own module's verdict (a user's tree: its source)."""
        return self.shipped.verdict if self.shipped is not None else self.source_state

    @property
    def answer(self) -> str:
        """The two answers in words, never one for the other."""
        ours = ("verified" if self.ok else "not built (sources not served)"
                if self.source_state == "not-served" else "not verified" if self.error is None
                else "not built")
        whose = "Debian's module" if self.shipped is not None else "your source"
        return f"{whose}: {self.shipped_state} · our fix: {ours}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetReport:
        """A report read back (report --merge): every field of the right type, then judged
        again from its own fields by `finish()`; a malformed shape is bad input."""
        if not isinstance(data, dict):
            raise BadInput("a report target is not a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("version", "package_version", "flavour", "release", "suite"):
            if not isinstance(known.get(name), str):
                raise BadInput(f"a report target lacks its {name} (a string)")
        for name, value in known.items():
            _check_type(name, value, cls.__dataclass_fields__[name].type)
        for side in ("before", "after", "shipped"):
            if isinstance(known.get(side), dict):
                known[side] = ModuleReport.from_json(known[side])
        report = cls(**known)
        report.finish()
        return report

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            data[key] = value.to_json() if isinstance(value, ModuleReport) else value
        data["changed_functions_ok"] = self.changed_functions_ok
        data["shipped_state"] = self.shipped_state
        data["answer"] = self.answer
        return data


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "bool": (bool,), "float": (int, float), "int": (int,),
    "list": (list,), "dict": (dict,), "ModuleReport": (dict,), "None": (type(None),),
}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """A field read back has the JSON type its annotation says (`str | None`, `list[str]`)."""
    kinds = [part.strip().split("[", 1)[0] for part in str(annotation).split("|")]
    allowed = tuple(t for kind in kinds for t in _JSON_TYPES.get(kind, (object,)))
    if isinstance(value, bool) and bool not in allowed and object not in allowed:
        raise BadInput(f"report field {name}: {value!r} is not a {annotation}")
    if not isinstance(value, allowed):
        raise BadInput(f"report field {name}: {type(value).__name__} where a {annotation} "
                       "belongs")
