"""The kernel's own reports, read from its log: each split out whole, classified by the checker
that wrote it (KCSAN, KASAN, lockdep, RCU, atomic sleep, WARN, oops, ...), the functions it names,
and where it came: before the race's start marker (boot: never a variant's) or during a variant's
run. The verdict of `race --sanitizer` is made of these and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

CVE_FUNCTION = "smc_clc_prfx_match"

# the first line of each report, and the checker it belongs to (first match wins)
_TITLES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kcsan", re.compile(r"^BUG: KCSAN: ")),
    ("kasan", re.compile(r"^BUG: KASAN: ")),
    ("rcu", re.compile(r"^WARNING: suspicious RCU usage")),
    ("lockdep", re.compile(
        r"^WARNING: (?:possible circular locking dependency|possible recursive locking|"
        r"inconsistent lock state|bad unlock balance|possible irq lock inversion|"
        r"\S+-safe -> \S+-unsafe lock order|held lock freed|lock held when returning|"
        r"Nested lock was not taken|held lock)|^\[ BUG: (?:Invalid wait context|"
        r"bad unlock balance detected!) \]|^BUG: (?:looking up invalid subclass|"
        r"MAX_LOCKDEP_\w+ too low|key \w+ has not been registered)")),
    ("atomic-sleep", re.compile(r"^BUG: (?:sleeping function called from invalid context|"
                                r"scheduling while atomic)")),
    ("warn", re.compile(r"^WARNING: CPU: \d+ PID: \d+ at |^WARNING: at ")),
    ("kfence", re.compile(r"^BUG: KFENCE: ")),
    ("oops", re.compile(r"^(?:BUG: |general protection fault|Oops|kernel BUG at|"
                        r"Unable to handle|Kernel panic|list_(?:add|del) corruption|"
                        r"Poison overwritten|Redzone overwritten|Object padding overwritten|"
                        r"page dumped because|watchdog: BUG: soft lockup|"
                        r"INFO: task .* blocked for more than|"
                        r"rcu: INFO: rcu_\w+ (?:self-)?detected stall)")),
)
_SEPARATOR = re.compile(r"^(?:=|-){20,}$")
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_FRAME = re.compile(r"^\s*([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[(\w+)\])?\s*$")
# frames of the reporting machinery itself, never what a report is about
_HELPERS = re.compile(r"^(?:dump_stack\w*|show_stack|print_\w+|kasan_\w+|__kasan_\w+|"
                      r"lockdep_\w+|__lock_acquire|lock_acquire|__might_\w+|__warn\w*|"
                      r"warn_\w+|report_bug|handle_bug|exc_invalid_op|asm_\w+|"
                      r"check_\w+|validate_chain|mark_lock\w*|debug_\w+|panic|"
                      r"__schedule_bug|__kcsan_\w+|kcsan_\w+)$")
MAX_LINES = 80


@dataclass
class KernelReport:
    """One report of a checker, whole."""

    kind: str  # kcsan | kasan | rcu | lockdep | atomic-sleep | warn | kfence | oops
    title: str  # its first line
    lines: list[str]  # the report, timestamps removed
    functions: list[str] = field(default_factory=list)  # the functions it is about
    during: str = "race"  # boot (before the start marker) | race (at or after it)

    @property
    def unknown_origin(self) -> bool:
        """A KCSAN report with only one side known (the other access not instrumented)."""
        return self.kind == "kcsan" and any("race at unknown origin" in ln for ln in self.lines)

    @property
    def two_sided(self) -> bool:
        return self.kind == "kcsan" and not self.unknown_origin

    @property
    def scope(self) -> str:
        """cve-function: it names smc_clc_prfx_match; other-smc: SMC code the fix does not
        touch; kernel: no SMC code at all."""
        if CVE_FUNCTION in self.functions:
            return "cve-function"
        in_module = smc_symbols(self.lines)
        if any(_is_smc(f) or f in in_module for f in self.functions):
            return "other-smc"
        return "kernel"

    @property
    def value_changed(self) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in self.lines
                     if ln.startswith("value changed:")), "")


def _is_smc(function: str) -> bool:
    return function.startswith(("smc_", "smcr_", "smcd_", "__smc_"))


_MODULE_SYMBOL = re.compile(r"([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+\s+\[smc(?:_diag)?\]")


def smc_symbols(lines: list[str]) -> set[str]:
    """The functions a report shows in the smc or smc_diag module (`name+0x../0x.. [smc]`)."""
    return {m.group(1) for ln in lines for m in _MODULE_SYMBOL.finditer(ln)}


def clean_lines(text: str) -> list[str]:
    """The log's lines with \\r and the kernel's timestamps removed."""
    return [_TIMESTAMP.sub("", ln) for ln in text.replace("\r", "").split("\n")]


def kind_of(line: str) -> str | None:
    """The checker whose report starts with this line, or None."""
    stripped = line.strip()
    return next((kind for kind, pattern in _TITLES if pattern.search(stripped)), None)


def split_reports(text: str, start_marker: str | None = None) -> list[KernelReport]:
    """Every report in the log, in order. Given a `start_marker`, those before it (boot, the
    guest's set-up and module load; all of them when the marker never came) are boot's: never a
    variant's."""
    lines = clean_lines(text)
    marker_at = next((i for i, ln in enumerate(lines) if start_marker and start_marker in ln),
                     len(lines) if start_marker else 0)
    reports: list[KernelReport] = []
    i = 0
    while i < len(lines):
        kind = kind_of(lines[i])
        if kind is None:
            i += 1
            continue
        end = _report_end(lines, i)
        body = [ln.rstrip() for ln in lines[i:end] if not _SEPARATOR.match(ln.strip())]
        report = KernelReport(kind=kind, title=lines[i].strip()[:300], lines=body[:MAX_LINES])
        report.functions = named_functions(report)
        if i < marker_at:
            report.during = "boot"
        reports.append(report)
        i = end
    return reports


def _report_end(lines: list[str], start: int) -> int:
    """Where a report ends: a closing separator line, `---[ end trace`, the race's markers, the
    next report's first line, or MAX_LINES."""
    for j in range(start + 1, min(len(lines), start + MAX_LINES)):
        line = lines[j].strip()
        if line.startswith("---[ end trace"):
            return j + 1
        if "smcpatch-race: " in line or kind_of(line) is not None:
            return j
        if _SEPARATOR.match(line) and j > start + 2:
            # a KCSAN/KASAN report's closing line; lockdep's dashes under its title are not
            return j + 1 if line.startswith("=") else j
    return min(len(lines), start + MAX_LINES)


def named_functions(report: KernelReport) -> list[str]:
    """The functions a report is about: those its title names (KCSAN: both sides, or the one
    access of an unknown origin; KASAN, atomic sleep, WARN: where it happened), else the first
    SMC function of its stacks, else the first frame that is not the reporting machinery."""
    title = report.title
    if report.kind == "kcsan":
        named = title.split(" in ", 1)[1] if " in " in title else ""
        return [_bare(part) for part in named.split(" / ") if part.strip()]
    if report.kind in ("kasan", "kfence"):
        match = re.search(r" in (\S+)", title)
        if match:
            return [_bare(match.group(1))]
    if report.kind == "warn":
        match = re.search(r" at \S+ (\S+)", title)
        if match:
            return [_bare(match.group(1))]
    frames = [m.group(1) for ln in report.lines[1:] if (m := _FRAME.match(ln))]
    in_module = smc_symbols(report.lines)
    smc = [f for f in frames if _is_smc(f) or f in in_module]
    if smc:
        return smc[:1]
    rip = next((ln.split(":", 1)[1].split()[0] for ln in report.lines if ln.startswith("RIP:")
                and ":" in ln and ln.split(":", 1)[1].split()), "")
    if rip and not rip.startswith("0x"):
        return [_bare(rip)]
    return [f for f in frames if not _HELPERS.match(f)][:1]


def _bare(symbol: str) -> str:
    """dst_dev_put+0x8e/0xf0 [smc] -> dst_dev_put"""
    return symbol.strip().split()[0].split("+", 1)[0]


# -- grouped for the report ----------------------------------------------------------------------
@dataclass
class ReportGroup:
    """The reports of one variant's run that name the same functions, with the same checker."""

    kind: str
    functions: list[str]
    scope: str  # cve-function | other-smc | kernel
    count: int
    two_sided: int  # KCSAN: reports naming both accesses
    unknown_origin: int  # KCSAN: reports with one side only
    title: str  # the first one's first line
    first: list[str]  # the first one, whole

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "functions": self.functions, "scope": self.scope,
                "count": self.count, "two_sided": self.two_sided,
                "unknown_origin": self.unknown_origin, "title": self.title,
                "first": self.first}


def group(reports: list[KernelReport]) -> list[ReportGroup]:
    """Reports grouped by (checker, the functions they name), in order of first appearance."""
    groups: dict[tuple[str, tuple[str, ...]], ReportGroup] = {}
    for report in reports:
        key = (report.kind, tuple(report.functions))
        found = groups.get(key)
        if found is None:
            found = groups[key] = ReportGroup(
                kind=report.kind, functions=list(report.functions), scope=report.scope,
                count=0, two_sided=0, unknown_origin=0, title=report.title,
                first=list(report.lines))
        found.count += 1
        found.two_sided += report.two_sided
        found.unknown_origin += report.unknown_origin
    return list(groups.values())


def reproduced(reports: list[KernelReport]) -> bool:
    """A report of the variant's run (not boot's) in smc_clc_prfx_match."""
    return any(r.during == "race" and r.scope == "cve-function" for r in reports)
