"""Source audit: Coccinelle rules that find the sk_dst_get()->dev pattern in kernel source.

The rules are package data (data/cocci/), in cvehound's format: one file per fix, whose `///`
header names the files it reads (`Files:`), the upstream fix (`Fix:`), the commit that brought
the bug (`Fixes:`) and, ours, the functions it is anchored in (`Functions:`); one general rule
(data/cocci/general/) finds the shape anywhere in net/, drivers/net and drivers/infiniband. Each
runs with Debian's spatch (`-D detect`), whose python block prints one line per site:
`file:line:col-col: ERROR: <id> in <function>`.

A site of a fix's rule is a known vulnerable site; a site of the general rule is a candidate to
read (the shape, not a judgement: a caller may hold RTNL or the device).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data import COCCI_DIR
from ..errors import AuditError, BadInput, ConfigError
from ..plumbing import hostpkg, proc, unpack
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_inputs
from ..plumbing.progress import Progress, silent
from . import fetch

TOOLS = (hostpkg.Tool("spatch", "coccinelle"), hostpkg.Tool("grep", "grep"))
SPATCH_TIMEOUT_S = 600  # one rule over its files; the general rule reads about ten files
# what spatch prints for a site (coccilib.report.print_report with our message)
_SITE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+)-\d+: (?:ERROR|WARNING): "
                   r"(?P<what>.+?) in (?P<function>[A-Za-z_]\w*)$")
# the call the general rule looks at: a file without this word cannot match (spatch is not run)
GENERAL_WORD = "sk_dst_get"
_HEADER = re.compile(r"^///\s*(?P<key>[A-Za-z-]+):\s*(?P<value>.*?)\s*$")


@dataclass(frozen=True)
class Rule:
    """One .cocci file and what its header says."""

    id: str  # the fix's id (CVE-2025-40168; smc_vlan_by_tcpsk-0b0e4d51c655), or the file's stem
    path: Path
    files: tuple[str, ...]  # the files it reads (general: directories), relative to the tree
    fix: str  # the upstream commit that fixed it
    fixes: str | None  # the commit that brought the bug (None: the general rule)
    functions: tuple[str, ...]  # where a fix's rule is anchored (general: none)
    general: bool = False

    @property
    def known(self) -> bool:
        """Its sites are known vulnerable sites (a fix's rule), not candidates."""
        return not self.general


def parse_rule(path: Path, general: bool = False) -> Rule:
    """The rule's `///` header (the first contiguous block of `///` lines, as cvehound reads
    it); a fix's rule needs Files, Fix, Fixes and Functions, the general one Files and Fix."""
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("///"):
            break
        found = _HEADER.match(line)
        if found:
            header[found["key"]] = found["value"]
    needed = ("Files", "Fix") if general else ("Files", "Fix", "Fixes", "Functions")
    missing = [k for k in needed if not header.get(k)]
    if missing:
        raise ConfigError(f"{path}: its /// header lacks {', '.join(missing)}")
    return Rule(id=path.stem, path=path, files=tuple(header["Files"].split()),
                fix=header["Fix"], fixes=header.get("Fixes"),
                functions=tuple(header.get("Functions", "").split()), general=general)


def load_rules(directory: Path = COCCI_DIR, general: bool = False) -> list[Rule]:
    """The fixes' rules, by id; with `general`, the general rules after them."""
    rules = [parse_rule(p) for p in sorted(directory.glob("*.cocci"))]
    if general:
        rules += [parse_rule(p, general=True)
                  for p in sorted((directory / "general").glob("*.cocci"))]
    if not rules:
        raise ConfigError(f"{directory}: no Coccinelle rules (*.cocci)")
    return rules


@dataclass(frozen=True)
class Site:
    """One place a rule matched: the sk_dst_get() call of a function that reads ->dev."""

    rule: str
    file: str  # relative to the tree
    line: int
    column: int
    function: str
    known: bool  # a fix's rule: a known vulnerable site; the general rule: a candidate
    fix: str = ""  # the upstream commit that fixes it
    also: tuple[str, ...] = ()  # a general site: the fixes' rules that found it too

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "file": self.file, "line": self.line, "column": self.column,
                "function": self.function, "known": self.known, "fix": self.fix,
                "also": list(self.also)}


@dataclass
class RuleRun:
    """One rule over a tree: which of its files were there, what it found, how long it took."""

    rule: Rule
    files: list[str]  # the files spatch read (relative to the tree)
    sites: list[Site] = field(default_factory=list)
    missing_functions: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def state(self) -> str:
        """vulnerable (a site) | clean (read, no site) | absent (nothing of it in the tree: its
        files or its functions are not there, so the tree says nothing about the fix)."""
        if self.sites:
            return "vulnerable" if self.rule.known else "candidates"
        if not self.files or (self.rule.functions
                              and set(self.missing_functions) == set(self.rule.functions)):
            return "absent"
        return "clean"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.rule.id, "rule_file": self.rule.path.name,
                "general": self.rule.general, "fix": self.rule.fix, "fixes": self.rule.fixes,
                "functions": list(self.rule.functions), "state": self.state,
                "files": self.files, "missing_functions": self.missing_functions,
                "sites": len(self.sites), "seconds": round(self.seconds, 2)}


# -- which files a rule reads ---------------------------------------------------------------------
def rule_files(rule: Rule, tree: Path) -> list[str]:
    """A fix's rule: those of its files the tree has. The general rule: every .c file under its
    directories that names sk_dst_get (found with grep, a fraction of a second for the 8,000
    files; spatch would only skip the others, after reading each)."""
    if not rule.general:
        return [f for f in rule.files if (tree / f).is_file()]
    tops = [top for top in rule.files if (tree / top).is_dir()]
    if not tops:
        return []
    done = proc.run(["grep", "-rlZw", "--include=*.c", "-e", GENERAL_WORD, "--", *tops],
                    cwd=tree, capture_output=True, timeout=600)
    if done.returncode not in (0, 1):  # 1: no file names it
        raise AuditError(f"grep over {', '.join(tops)} of {tree} failed: "
                         f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return sorted(p for p in done.stdout.decode(errors="surrogateescape").split("\0") if p)


def check_tree(tree: Path, rules: Iterable[Rule]) -> None:
    """A user's tree: bad input unless it holds some file a rule reads (before any work)."""
    if not tree.is_dir():
        raise BadInput(f"--source {tree}: not a directory")
    wanted = [f for r in rules for f in r.files]
    if not any((tree / f).exists() for f in wanted):
        raise BadInput(f"--source {tree}: none of the files the rules read is there "
                       f"({', '.join(dict.fromkeys(wanted))}): give the kernel tree's top "
                       "directory")


# -- running spatch -------------------------------------------------------------------------------
def spatch_version() -> str:
    done = proc.run(["spatch", "--version"], capture_output=True, text=True, timeout=60)
    found = re.search(r"spatch version (\S+)", done.stdout)
    return found.group(1) if found else "unknown"


def spatch_command(rule: Rule, files: list[str]) -> list[str]:
    """As cvehound runs a rule: no includes, the detect mode, sites on stdout, no diff."""
    return ["spatch", "--no-includes", "--include-headers", "-D", "detect", "--no-show-diff",
            "--very-quiet", "--cocci-file", str(rule.path), *files]


def parse_sites(output: str, rule: Rule) -> list[Site]:
    """The sites spatch printed, each once (a function reached by several paths prints the
    same call again), in file and line order."""
    sites: dict[tuple[str, int], Site] = {}
    for line in output.splitlines():
        found = _SITE.match(line.strip())
        if found:
            site = Site(rule=rule.id, file=found["file"], line=int(found["line"]),
                        column=int(found["column"]), function=found["function"],
                        known=rule.known, fix=rule.fix)
            sites.setdefault((site.file, site.line), site)
    return sorted(sites.values(), key=lambda s: (s.file, s.line))


def run_rule(rule: Rule, tree: Path, timeout: float = SPATCH_TIMEOUT_S) -> RuleRun:
    """One rule over the files of the tree it reads (spatch not run when there are none)."""
    started = time.monotonic()
    files = rule_files(rule, tree)
    run = RuleRun(rule=rule, files=files, missing_functions=_missing_functions(rule, tree, files))
    if files:
        done = proc.run(spatch_command(rule, files), cwd=tree, capture_output=True, text=True,
                        timeout=timeout, error=AuditError,
                        what=f"spatch on {rule.path.name} over {len(files)} file(s) of {tree}")
        if done.returncode != 0:
            tail = [ln for ln in (done.stderr or "").splitlines() if ln.strip()][-3:]
            raise AuditError(f"spatch failed (exit {done.returncode}) on {rule.path.name}: "
                             f"{' / '.join(tail) or 'no error output'}")
        run.sites = parse_sites(done.stdout, rule)
    run.seconds = time.monotonic() - started
    return run


def _missing_functions(rule: Rule, tree: Path, files: list[str]) -> list[str]:
    """The rule's functions defined in none of its files (a renamed or moved function: the
    rule cannot judge the fix there)."""
    text = "\n".join((tree / f).read_text(encoding="utf-8", errors="replace") for f in files)
    return [fn for fn in rule.functions
            if not re.search(rf"^\w[^;(]*\b{re.escape(fn)}\s*\(", text, re.MULTILINE)]


def audit(tree: Path, rules: list[Rule], timeout: float = SPATCH_TIMEOUT_S,
          progress: Progress = silent) -> list[RuleRun]:
    """Every rule over the tree, in order; a general site found by a fix's rule too names it."""
    runs: list[RuleRun] = []
    for i, rule in enumerate(rules):
        progress(f"spatch {rule.path.name}", done=i, total=len(rules))
        runs.append(run_rule(rule, tree, timeout))
    progress("spatch done", done=len(rules), total=len(rules))
    known: dict[tuple[str, int], list[str]] = {}
    for run in runs:
        for site in run.sites:
            if site.known:
                known.setdefault((site.file, site.line), []).append(site.rule)
    for run in runs:
        run.sites = [s if s.known else replace(s, also=tuple(known.get((s.file, s.line), ())))
                     for s in run.sites]
    return runs


# -- the tree of a Debian kernel (--kernel) -------------------------------------------------------
AUDIT_SOURCE_RECIPE = 1


def members_of(rules: Iterable[Rule]) -> list[str]:
    """The paths the rules read, none inside another (a directory holds its files)."""
    paths = sorted({f.rstrip("/") for r in rules for f in r.files})
    return [p for p in paths if not any(p.startswith(q + "/") for q in paths)]


def kernel_tree(cache: Cache, ws: fetch.Workspace, rules: list[Rule], members: list[str],
                progress: Progress = silent) -> tuple[Path, str]:
    """A tree holding every file `rules` read, and where it came from: the net/smc sources
    verify fetched when they are enough ("fetched"); else the whole tree race --sanitizer
    extracted ("full"); else `members` (every rule's paths: one entry serves the fixes' rules
    and the general one) taken out of the linux-source package once ("extracted": one pass over
    its tarball, about 190 MB for net/, drivers/net and drivers/infiniband, cached)."""
    if all(_holds(ws.source_tree, r) for r in rules):
        return ws.source_tree, "fetched"
    target = ws.target
    full = fetch.full_source_entry(cache, target) / "tree"
    if fetch.full_source_present(cache, target) and (full / "Makefile").is_file():
        return full, "full"
    entry = cache.dir("audit-sources", f"{target.source_package}_{target.package_version}")
    key = hash_inputs("audit-sources", AUDIT_SOURCE_RECIPE, target.source_package,
                      target.package_version, target.series, *members)
    with cache.lock(f"entry-audit-sources-{entry.name}"):
        if not (entry_is_current(entry, key) and (entry / "tree").is_dir()):
            deb = fetch.source_deb(cache, ws)
            progress(f"extract {', '.join(members)} from {deb.name}")
            _extract(target.series, deb, entry, key, members)
    return entry / "tree", "extracted"


def _holds(tree: Path, rule: Rule) -> bool:
    return all((tree / f).exists() for f in rule.files)


def _extract(series: str, deb: Path, entry: Path, key: str, members: list[str]) -> None:
    """The members (files, or directories with all they hold) of the package's tarball, through
    the same checked pipeline as fetch's (plumbing.unpack; links kept inside the tree)."""
    inner = f"./usr/src/linux-source-{series}.tar.xz"
    top = f"linux-source-{series}"
    with atomic_dir(entry, key, {"deb": deb.name, "members": members}) as tmp:
        script = ('set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" | xz -T0 -dc | '
                  'tar -x --no-same-owner -C "$3" "${@:4}"')
        unpack.run_shell(script, [str(deb), inner, str(tmp), *(f"{top}/{m}" for m in members)],
                         what=f"extract {deb.name}", where=tmp)
        extracted = tmp / top
        if not extracted.is_dir():
            raise AuditError(f"{deb.name} holds none of {', '.join(members)}: not a kernel "
                             "source package?")
        unpack.check_links_inside(tmp)
        extracted.rename(tmp / "tree")
