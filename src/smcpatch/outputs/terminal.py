"""Everything smcpatch shows a person, with rich: progress bars, the verify table, the inspect
evidence, the kernel list, the dkms summary. Only the CLI imports this module: the stages and the
commands never import rich, so the library works without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..plumbing.progress import Progress as ProgressCallback

if TYPE_CHECKING:  # annotations only: printing needs no pipeline imported
    from ..kernels.targets import Target
    from ..pipeline.report import TargetReport


# -- verify: progress while it runs, the table at the end -----------------------------------------
class RichDisplay:
    """commands.display.Display on rich progress bars: one bar per target, a line when done."""

    def __init__(self, bars: Progress, console: Console) -> None:
        self.bars, self.console = bars, console
        self.tasks: dict[str, TaskID] = {}

    def reporter(self, label: str) -> ProgressCallback:
        task = self.tasks[label] = self.bars.add_task(f"[bold]{label}[/] waiting", total=None)

        def update(message: str, done: float | None = None, total: float | None = None) -> None:
            self.bars.update(task, description=f"[bold]{label}[/] {message}", total=total,
                             completed=done or 0)

        return update

    def done(self, label: str, report: TargetReport) -> None:
        self.bars.remove_task(self.tasks.pop(label))
        judged = report.error or report.after is not None or report.shipped is not None
        word = ("[green]OK[/]" if report.ok else "[red]FAIL[/]") if judged else "done"
        self.console.print(f"{word} {label} ({report.timings.get('total', 0):.1f} s)"
                           + (f": {escape(report.error)}" if report.error else ""))

    def say(self, message: str) -> None:
        self.console.print(escape(message))


@contextmanager
def progress_display(console: Console) -> Iterator[RichDisplay]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TaskProgressColumn(), TimeElapsedColumn())
    # not a terminal: no live display (stopping one still printed an empty line: noise in a
    # pipe and before a one-line error)
    with Progress(*columns, console=console, transient=True,
                  disable=not console.is_terminal) as bars:
        yield RichDisplay(bars, console)


def _state(verdict: str) -> str:
    colour = {"fixed": "green", "vulnerable": "red", "not_affected": "green"}.get(verdict,
                                                                                   "yellow")
    return f"[{colour}]{verdict.replace('_', ' ')}[/]"


def print_rows(title: str, columns: list[str], rows: list[list[str]], console: Console) -> None:
    """A table when it fits the console (nothing truncated), else one block per row with every
    column named: readable at 80 columns and in a pipe, never a squeezed verdict."""
    plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
    widths = [max([len(c), *(max((len(x) for x in row[i].split("\n")), default=0)
                              for row in plain)]) for i, c in enumerate(columns)]
    if sum(widths) + 3 * len(columns) + 1 <= console.width:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    console.print(f"[bold]{escape(title)}[/]")
    for row in rows:
        console.print(f"[bold]{row[0]}[/]")
        for column, cell in zip(columns[1:], row[1:], strict=True):
            console.print(f"  {column}: {cell}", soft_wrap=True)


def verify_rows(reports: list[TargetReport]) -> tuple[list[str], list[list[str]]]:
    """Per target the two answers apart: what Debian ships (what machines run) and whether our
    fix is verified; then the checks behind the second (vermagic, modversions CRCs, only the
    patched functions changed, and the load in a guest when asked)."""
    columns = ["kernel", "Debian's module", "our fix", "checks"]
    rows = []
    for r in reports:
        if r.error:
            ours, checks = "[red]not built[/]", "[red]error[/]"
        elif r.source_state == "not-served":
            ours, checks = "[yellow]not built[/]", "sources not served"
        else:
            ours = "[green]verified[/]" if r.ok else "[red]NOT verified[/]"
            checks = ", ".join(_check_cell(name, passed) for name, passed in _named_checks(r))
        shipped = _state(r.shipped_state) if r.shipped or r.source_state != "unknown" else "-"
        if r.shipped is None and r.source_state != "unknown":
            shipped += " (source)"
        kernel = r.package_version + ("" if r.flavour == "amd64" else f" {r.flavour}")
        rows.append([kernel, shipped, ours, checks])
    return columns, rows


_SHORT = {"vermagic": "vermagic", "modversions": "crc",
          "only the patched functions changed": "fns", "after-module loads": "loads"}


def _named_checks(report: TargetReport) -> list[tuple[str, bool]]:
    named = {c.name: c.passed for c in report.checks()}
    shown = [(short, named[name]) for name, short in _SHORT.items() if name in named]
    others = [n for n, ok in named.items() if not ok and n not in _SHORT]
    return [*shown, *((n, False) for n in others)]


def _check_cell(name: str, passed: bool) -> str:
    return name if passed else f"[red]{name} NO[/]"


def print_summary(reports: list[TargetReport], console: Console) -> None:
    columns, rows = verify_rows(reports)
    print_rows("CVE-2025-40168: Debian's module (what machines run) and our fix", columns, rows,
               console)
    vulnerable = [r for r in reports if r.shipped_state != "fixed"]
    if vulnerable:
        console.print(f"[yellow]{len(vulnerable)} of {len(reports)} kernel(s) ship a module that "
                      "is not fixed[/]: machines running them are exposed until they boot a fixed "
                      "Debian kernel or load our fixed module (--fail-on-vulnerable fails CI "
                      "on them)", soft_wrap=True)
    _print_per_fix(reports, console)
    for r in reports:
        for problem in r.problems:
            console.print(f"[red]problem {r.package_version} {r.flavour}:[/] {escape(problem)}",
                          soft_wrap=True)
        if r.error_detail:
            console.print(f"[dim]{escape(r.error_detail)}[/]")
    _print_notes(reports, console)


def _print_per_fix(reports: list[TargetReport], console: Console) -> None:
    """One compact line per target judged per fix: Debian's module on each fix of the series,
    and our after-module on each fix chosen (the table's columns are the first fix's)."""
    for r in reports:
        shipped = r.shipped_fixes()
        ours = [(label, r.after.fix_verdict(commit) or "not judged")
                for commit, label in r.chosen_fixes()] if r.after and r.after.fixes else []
        if not shipped and not ours:
            continue
        parts = []
        if shipped:
            parts.append("Debian's module " + ", ".join(f"{label} {v}" for label, v in shipped))
        if ours:
            parts.append("our module " + ", ".join(f"{label} {v}" for label, v in ours))
        console.print(f"per fix {r.package_version} {r.flavour}: {escape('; '.join(parts))}",
                      soft_wrap=True)


def _print_notes(reports: list[TargetReport], console: Console) -> None:
    """Each note once: those every target shares together, the others under their target."""
    shared = set(reports[0].notes).intersection(*(r.notes for r in reports[1:])) \
        if len(reports) > 1 else set()
    for note in reports[0].notes if reports else []:
        if note in shared:
            console.print(f"[dim]note (every target): {escape(note)}[/]", soft_wrap=True)
    for r in reports:
        for note in dict.fromkeys(r.notes):
            if note not in shared:
                console.print(f"[dim]note {r.package_version} {r.flavour}: {escape(note)}[/]",
                              soft_wrap=True)


# -- inspect ------------------------------------------------------------------------------------
def print_inspect(data: dict[str, Any], console: Console) -> None:
    colour = {"fixed": "green", "vulnerable": "red"}.get(data["verdict"], "yellow")
    console.print(f"[bold]{data['module']}[/]: [{colour}]{data['verdict']}[/]")
    console.print(f"  vermagic: {data['vermagic']}   DWARF: {'yes' if data['has_dwarf'] else 'no'}")
    console.print(f"  signature: {data.get('signature_text', 'unsigned')}")
    for fix in data.get("fixes", []):  # one line per fix of the series in the module
        colour = {"fixed": "green", "vulnerable": "red"}.get(fix["verdict"], "yellow")
        where = ", ".join(j["function"] for j in fix["judged"]) or ", ".join(fix["functions"])
        console.print(f"  {escape(fix['cve'] or fix['fix']):<16} [{colour}]{fix['verdict']:<10}[/]"
                      f" {escape(where)}")
    if data.get("fixes"):
        console.print(f"  {data['fixes'][0]['cve'] or data['fixes'][0]['fix']} in detail:")
    for reason in data["reasons"]:
        console.print(f"  - {escape(reason)}")
    ev = data["evidence"]
    console.print(f"  fragments: {', '.join(f'{k} ({v} B)' for k, v in ev['fragments'].items())}")
    for key in ("rcu_read_lock_sites", "rcu_read_unlock_sites", "dst_reference_sites"):
        sites = ", ".join(f"{s['target']}@{s['fragment']}+{s['offset']:#x}" for s in ev[key])
        console.print(f"  {key.replace('_', ' ')}: {sites or 'none'}")
    console.print(f"  call targets: {', '.join(ev['call_targets'])}")
    if ev.get("dwarf_inlined") is not None:
        console.print(f"  DWARF inlined: {', '.join(ev['dwarf_inlined']) or 'none'}")
    for key in ("vermagic_ok", "modversions_ok"):
        if key in data:
            console.print(f"  {key}: {data[key]}")


# -- kernels, scan, dkms ------------------------------------------------------------------------
def print_kernels(title: str, targets: list[Target], console: Console) -> None:
    rows = []
    for t in targets:
        own = f":{t.arch}" if t.foreign else ""  # a foreign kernel's own-arch packages
        packages = ", ".join((t.source_package, t.headers_package + own,
                              t.common_headers_package, t.kbuild, t.image_package + own))
        rows.append([t.version, t.package_version, t.suite, t.arch, t.release, t.expect or "-",
                      packages])
    print_rows(title, ["version", "package version", "suite", "arch", "release", "expect",
                       "packages"], rows, console)


def print_archive(rows: list[Any], console: Console) -> None:
    """`kernels --archive`: commands.kernels.ArchiveKernel rows."""
    print_rows("kernels of the archive (every suite the host's mirrors serve)",
               ["package version", "suite", "arch", "release", "Debian's smc.ko", "our fix",
                "can"],
               [[r.package_version, r.suite, r.arch, r.release or "(no headers)", r.state,
                 r.verified, getattr(r, "can", "build")] for r in rows], console)


def print_scan(result: Any, console: Console) -> None:
    """`scan`: commands.scan.ScanResult."""
    rows = []
    for r in result.rows:
        verdict = "[red]error[/]" if r.error else _state(r.verdict)
        said = {"agree": "[green]agrees[/]", "disagree": "[red]DISAGREES[/]"}.get(
            r.changelog, r.changelog)
        if r.changelog_fixed_in:
            said += f" ({r.changelog_fixed_in})"
        rows.append([r.package, r.version, r.suite, verdict, said, escape(r.error or r.evidence)])
    print_rows(f"CVE-2025-40168 in Debian's kernel images ({', '.join(result.suites)})",
               ["package", "version", "suite", "smc.ko", "changelog", "evidence"], rows, console)
    counts = {v: sum(1 for r in result.rows if r.verdict == v and not r.error)
              for v in ("vulnerable", "fixed", "not_affected", "unknown")}
    console.print(f"{len(result.rows)} images in {result.seconds:.1f} s: "
                  + ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n)
                  + f"; downloaded {result.downloaded_bytes / 1e6:.0f} MB "
                  f"({sum(1 for r in result.rows if r.from_cache)} from the cache)")


def print_race(result: Any, console: Console) -> None:
    """`race`: commands.race.RaceResult."""
    debug = result.debug_kernel
    rows = []
    for r in result.runs:
        name = {"before": "before (vulnerable)", "after": "after (fixed)",
                "canary": "canary (RCU lock moved)"}.get(r.variant, r.variant)
        in_cve = sum(g["count"] for g in r.reports if g["scope"] == "cve-function")
        row = [name + (", instrumented" if r.instrumented else ""),
               str(r.attempts), str(r.prfx_match_calls), str(r.returns.get("-19", 0)),
               f"[red]{len(r.splats)}[/]" if r.splats else "0"]
        if debug:
            row.append(f"[red]{in_cve}[/]" if in_cve else "0")
        row += ["[red]yes[/]" if r.reproduced else "no",
                r.outcome if r.outcome == "finished" else f"[red]{r.outcome}[/]"]
        rows.append(row)
    columns = ["variant", "churn", "calls", "dev gone", "reports" if debug else "splats"]
    columns += ["in prfx_match"] if debug else []
    columns += ["reproduced", "guest"]
    what = (f"{result.release}, a {debug['title']} of Debian's {result.kernel} source (not "
            "Debian's binary kernel)" if debug else f"{result.release} ({result.kernel})")
    print_rows(f"CVE-2025-40168 under device churn: {what}", columns, rows, console)
    console.print(f"kernel command line (checkers): {escape(result.cmdline)}")
    if debug:
        console.print(f"debug kernel: {debug['sanitizer']} ({escape(debug['title'])}), "
                      + ("from the cache" if debug["from_cache"] else
                         f"built in {debug['build_seconds']:.0f} s") + "; kernel make: "
                      + escape(" ".join(debug["kernel_make_args"]) or "(no variables)")
                      + "; module make: " + escape(" ".join(debug["module_make_args"])))
        for key, value in debug["run_params"].items():
            console.print(f"during the churn only: {debug['sanitizer']}.{key}={value}")
    for patch in sorted(set(result.widening.values())):
        what = ("a 20 ms re-read of the device" if patch.startswith("kcsan-")
                else "a 20 ms busy-wait")
        console.print(f"instrumented builds: {patch} ({what}, not a fix)")
    for r in result.runs:
        if debug:
            _print_reports(r, console)
        else:
            for line in r.splats[:3]:
                console.print(f"[red]{r.variant}:[/] {escape(line)}")
        if r.error:
            console.print(f"[yellow]{r.variant}:[/] {escape(r.error)}")
    caught = result.canary_caught
    if caught is not None:
        console.print("the RCU canary was caught: the checker is live" if caught else
                      "[red]the RCU canary was NOT caught: the checker's silence proves "
                      "nothing[/]")
    survived = result.fixed_survived
    console.print("the fixed module survived every attempt with no splat" if survived else
                  "[red]the fixed module did not survive[/]" if survived is False else "")


_SCOPES = {"cve-function": "in smc_clc_prfx_match", "other-smc": "NOT explained by the fix "
           "(other SMC code)", "kernel": "outside SMC"}


def _print_reports(run: Any, console: Console) -> None:
    """A debug kernel's run: its reports by function, then what the checker saw, in words."""
    for g in run.reports:
        console.print(f"[red]{run.variant}:[/] {g['count']} x {escape(g['title'])} "
                      f"[{_SCOPES.get(g['scope'], g['scope'])}]", soft_wrap=True)
    if run.verdict:
        console.print(f"{run.variant}: the module loaded is judged {run.verdict}")
    if run.finding:
        console.print(f"{run.variant}: {escape(run.finding)}", soft_wrap=True)


def print_dkms(summary: dict[str, Any], console: Console) -> None:
    kind = "fixed sources" if summary.get("fixed_sources") else "DKMS package"
    console.print(f"{kind} {summary['name']} {summary['version']} for kernels "
                  f"{summary['release_regex']}: {summary['package']}")
    for f in summary["fixes"]:
        done = ("applied in the sources (patches/" + f["patch"] + ")"
                if summary.get("fixed_sources") else "PATCH " + f["patch"]) if f["patch"] \
            else "no patch needed"
        console.print(f"  {f['id']}: {f['state']} in Debian's source -> {done}")
    if summary.get("fixed_sources"):
        console.print(f"  build: cd {summary['package']} && make -C /lib/modules/<release>/build "
                      "M=$PWD   (or dkms add $PWD)")
    if summary["check"]:
        ck = summary["check"]
        console.print(f"  dkms build ({ck['dkms']}, {ck['seconds']} s) for "
                      f"{ck['release']}: smc.ko {ck['verdict']}, vermagic "
                      f"{'ok' if ck['vermagic_ok'] else 'MISMATCH'}, modversions "
                      f"{'ok' if ck['modversions_ok'] else 'MISMATCH'}, changed vs "
                      f"Debian's: {', '.join(ck['changed_vs_shipped'] or []) or 'none'}; "
                      f"{ck['signature_text']}")



# -- host ---------------------------------------------------------------------------------------
_SMC = {"none": "[green]no SMC[/]", "no_modules": "no modules", "builtin": "[yellow]built in[/]"}


def host_rows(result: Any) -> tuple[list[str], list[list[str]]]:
    """`host`: commands.host.HostResult, one row per installed kernel."""
    columns = ["kernel", "running", "package", "smc.ko", "loaded", "loadable", "advice"]
    rows = []
    for s in result.kernels:
        k = s.kernel
        verdict = _SMC.get(s.smc) or (_state(s.verdict) if s.verdict != "unknown"
                                      else "[yellow]undecided[/]")
        package = f"{k.package} {k.version}" if k.package else "(not from a package)"
        loaded = {True: "[red]yes[/]", False: "no", None: "?" if s.running else "-"}[s.loaded]
        is_running = "[bold]yes[/]" if s.running else "no" if result.runtime.release else "-"
        if s.smc == "builtin":
            loadable = "[red]yes[/] (built in)"
        elif s.smc != "module":
            loadable = "-"
        elif s.loadable:
            loadable = ("[red]yes[/]" + ("" if s.autoloads else
                                         f" (autoload stopped: {escape(s.blocks[-1].text)})"))
        else:
            loadable = f"[green]no[/]: {escape(str(s.blocks[0]))}"
        advice = escape(s.advice.describe()) if s.advice else "-"
        rows.append([k.release, is_running, escape(package), verdict,
                     loaded, loadable, advice])
    return columns, rows


def print_host(result: Any, console: Console) -> None:
    columns, rows = host_rows(result)
    title = ("CVE-2025-40168 on this machine" if result.root == "/" else
             f"CVE-2025-40168 on the machine at {result.root}")
    if rows:
        print_rows(title, columns, rows, console)
    else:
        console.print(f"[bold]{escape(title)}[/]: no kernels installed")
    for s in result.kernels:
        for note in s.notes:
            console.print(f"[dim]note {s.kernel.release}: {escape(note)}[/]", soft_wrap=True)
    for note in result.notes:
        console.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)
    colour = "red" if result.exit_code else "green"
    console.print(f"[{colour}]{escape(result.summary)}[/]", soft_wrap=True)
