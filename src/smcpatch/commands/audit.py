"""`audit`: the sk_dst_get()->dev pattern found in kernel source by Coccinelle rules, one per fix
(cvehound's format) and, with `general`, one for the shape anywhere in net/, drivers/net and
drivers/infiniband. The source is a user's tree (`source`) or a Debian kernel's (`kernels`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..data import COCCI_DIR
from ..errors import BadInput
from ..kernels.request import KernelRequest
from ..kernels.resolve import resolve
from ..outputs.jsonreport import now, write_json
from ..pipeline import audit
from ..pipeline.audit import Rule, RuleRun, Site
from ..pipeline.fetch import fetch
from ..plumbing import hostpkg
from ..plumbing.cache import Cache
from ..plumbing.progress import QUIET, Display, Progress
from . import EXIT_FAIL, EXIT_OK

SCHEMA = "smcpatch-audit/1"


@dataclass
class AuditRequest:
    kernels: KernelRequest | None = None  # one Debian kernel (--kernel) ...
    source: Path | None = None  # ... or a user's tree (--source)
    general: bool = False  # also the general rule (--general)
    json_path: Path | None = None
    cache_dir: Path | None = None
    timeout: float = 600.0  # seconds for one rule's spatch run
    rules_dir: Path = COCCI_DIR


@dataclass
class AuditResult:
    tree: Path
    origin: str  # given (--source) | fetched | full | extracted (where a kernel's tree came from)
    kernel: str | None  # the Debian version audited (--kernel)
    source_package: str | None
    spatch: str  # spatch's version
    runs: list[RuleRun]  # in rule order
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def sites(self) -> list[Site]:
        return [s for run in self.runs for s in run.sites]

    @property
    def known_sites(self) -> list[Site]:
        return [s for s in self.sites if s.known]

    @property
    def exit_code(self) -> int:
        """1 when a fix's rule found a site (a known vulnerable one), else 0: the general
        rule's candidates are for reading, not a verdict."""
        return EXIT_FAIL if self.known_sites else EXIT_OK

    def site_lines(self) -> list[str]:
        """One line per site: where, which function, which fix."""
        lines = []
        for s in self.sites:
            if s.known:
                what = f"{s.rule} (fix {s.fix[:12]})"
            else:
                also = f"; also {', '.join(s.also)}" if s.also else ""
                what = f"candidate ({s.rule}{also})"
            lines.append(f"{s.file}:{s.line}: {s.function}(): {what}")
        return lines

    def rule_lines(self) -> list[str]:
        """One line per rule: its state and what it read."""
        lines = []
        for run in self.runs:
            read = (f"{len(run.files)} file(s) naming sk_dst_get" if run.rule.general
                    else ", ".join(run.files) or "none of " + ", ".join(run.rule.files))
            gone = (f"; not defined there: {', '.join(run.missing_functions)}"
                    if run.missing_functions else "")
            lines.append(f"{run.rule.id}: {run.state}, {len(run.sites)} site(s) "
                         f"({read}{gone})")
        return lines

    def summary(self) -> str:
        known = self.known_sites
        candidates = len(self.sites) - len(known)
        fixes = sorted({s.rule for s in known})
        where = f"kernel {self.kernel}" if self.kernel else str(self.tree)
        spent = f"in {self.timings.get('spatch', 0.0):.1f} s of spatch"
        tail = f"; {candidates} candidate site(s) of the general rule" if candidates else ""
        if known:
            return (f"VULNERABLE: {len(known)} known vulnerable site(s) in {where} "
                    f"({', '.join(fixes)}) {spent}{tail}")
        return f"no known vulnerable site in {where} {spent}{tail}"

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tool_version": __version__, "generated": now(),
                "tree": str(self.tree), "origin": self.origin, "kernel": self.kernel,
                "source_package": self.source_package, "spatch_version": self.spatch,
                "vulnerable": bool(self.known_sites), "exit_code": self.exit_code,
                "summary": self.summary(), "rules": [r.to_json() for r in self.runs],
                "sites": [s.to_json() for s in self.sites],
                "timings": {k: round(v, 2) for k, v in self.timings.items()},
                "notes": self.notes}


def check_request(request: AuditRequest) -> None:
    """What can be refused before any work (the tree, the kernel's shape)."""
    if (request.kernels is None) == (request.source is None):
        raise BadInput("audit reads one tree: give --kernel K or --source DIR")
    if request.kernels is not None:
        given = request.kernels.kernels
        if len(given) != 1 or given[0] == "all":
            raise BadInput("audit reads one kernel's source: give one --kernel")
        if len(request.kernels.arches) > 1 or "all" in request.kernels.arches:
            raise BadInput("audit reads one kernel's source (the same for every arch): give "
                           "at most one --arch")
        request.kernels.check()


def run(request: AuditRequest, display: Display = QUIET) -> AuditResult:
    """Check the request, install spatch (Debian's coccinelle) if missing, get the tree, run
    every rule over it; write the JSON when asked."""
    check_request(request)
    rules = audit.load_rules(request.rules_dir, general=request.general)
    if request.source is not None:
        audit.check_tree(request.source, rules)
    hostpkg.ensure(audit.TOOLS, "Coccinelle (spatch, for audit)", say=display.say)
    timings: dict[str, float] = {}
    started = time.monotonic()
    if request.source is not None:
        tree, origin, kernel, package = request.source.resolve(), "given", None, None
        progress = display.reporter(str(request.source))
    else:
        assert request.kernels is not None
        tree, origin, kernel, package, progress = _kernel_tree(request, rules, display)
        timings["fetch"] = time.monotonic() - started
    started = time.monotonic()
    runs = audit.audit(tree, rules, request.timeout, progress)
    timings["spatch"] = time.monotonic() - started
    result = AuditResult(tree=tree, origin=origin, kernel=kernel, source_package=package,
                         spatch=audit.spatch_version(), runs=runs, timings=timings)
    if any(r.state == "absent" for r in runs):
        result.notes.append("a rule whose files or functions are not in the tree says nothing "
                            "about its fix there (state absent)")
    if request.json_path:
        write_json(request.json_path, result.to_json())
    return result


def _kernel_tree(request: AuditRequest, rules: list[Rule],
                 display: Display) -> tuple[Path, str, str, str, Progress]:
    """The Debian kernel's tree: resolved as verify resolves --kernel, fetched as verify
    fetches it (cached), the files the rules read found or extracted once."""
    assert request.kernels is not None
    cache = Cache.open(request.cache_dir)
    target = resolve(cache, request.kernels)[0]
    if target.judge_only:
        raise BadInput(f"kernel {target.package_version}: the mirrors serve its image but not "
                       "its sources: nothing to audit (`smcpatch verify` judges Debian's "
                       "module)")
    progress = display.reporter(target.package_version)
    ws = fetch(cache, target, progress)
    every = audit.load_rules(request.rules_dir, general=True)
    tree, origin = audit.kernel_tree(cache, ws, rules, audit.members_of(every), progress)
    return tree, origin, target.package_version, target.source_package, progress
