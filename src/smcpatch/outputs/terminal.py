"""Everything smcpatch shows a person, with rich: progress bars, the verify table, the inspect
evidence, the kernel list, the dkms summary. Only the CLI imports this module: the stages and the
commands never import rich, so the library works without it.

Every value is text by construction (the rule: outputs.text): a line is `fmt(template, values)`,
where only the template of ours is markup, and a table cell is a plain str (shown as text) or a
fmt Text; nothing else here builds markup from a value.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..plumbing.progress import Progress as ProgressCallback
from .text import shell_word, visible

if TYPE_CHECKING:  # annotations only: printing needs no pipeline imported
    from ..kernels.targets import Target
    from ..pipeline.report import TargetReport


# -- markup templates with outside values -------------------------------------------------------
_MARK = 0xE000  # private-use characters stand for the values while the template is parsed


class _Marks(string.Formatter):
    """str.format over a template where each field becomes one private-use character and its
    value (formatted with its spec, made visible) is kept aside as a Text."""

    def __init__(self) -> None:
        self.values: list[Text] = []

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Text):  # ours, built by fmt: its styles kept
            piece = value.copy()
        else:
            piece = Text(visible(format(value, format_spec)))
        self.values.append(piece)
        return chr(_MARK + len(self.values) - 1)


def fmt(template: str, *args: Any, **kwargs: Any) -> Text:
    """A rich Text from a markup template of ours (`"[bold]{}[/]: {}"`) and values from
    anywhere: the template's markup is parsed before any value is in it, so a value is only ever
    text (made visible), styled by the markup around its field. A Text value (an earlier fmt)
    keeps its own styles."""
    marks = _Marks()
    parsed = Text.from_markup(marks.vformat(template, args, kwargs))
    if not marks.values:
        return parsed
    plain = parsed.plain
    cuts = [i for i, ch in enumerate(plain) if _MARK <= ord(ch) < _MARK + len(marks.values)]
    offsets = sorted({o for i in cuts for o in (i, i + 1)})
    out = Text(style=parsed.style, end=parsed.end)
    for piece in parsed.divide(offsets):
        code = ord(piece.plain[0]) - _MARK if len(piece.plain) == 1 else -1
        if 0 <= code < len(marks.values):
            value = marks.values[code]
            for span in reversed(piece.spans):  # the template's style under the value's own
                value.stylize_before(span.style, 0, len(value))
            out.append_text(value)
        else:
            out.append_text(piece)
    return out


def plain(value: object) -> Text:
    """An outside string as a Text: visible, never markup."""
    return value.copy() if isinstance(value, Text) else Text(visible(value))


# -- verify: progress while it runs, the table at the end -----------------------------------------
class RichDisplay:
    """commands.display.Display on rich progress bars: one bar per target, a line when done."""

    def __init__(self, bars: Progress, console: Console) -> None:
        self.bars, self.console = bars, console
        self.tasks: dict[str, TaskID] = {}

    def reporter(self, label: str) -> ProgressCallback:
        task = self.tasks[label] = self.bars.add_task("", total=None, label=label,
                                                      message="waiting")

        def update(message: str, done: float | None = None, total: float | None = None) -> None:
            self.bars.update(task, message=message, total=total, completed=done or 0)

        return update

    def done(self, label: str, report: TargetReport) -> None:
        self.bars.remove_task(self.tasks.pop(label))
        judged = report.error or report.after is not None or report.shipped is not None
        word = (fmt("[green]OK[/]") if report.ok else fmt("[red]FAIL[/]")) if judged else "done"
        line = fmt("{} {} ({:.1f} s)", word, label, report.timings.get("total", 0))
        self.console.print(fmt("{}: {}", line, report.error) if report.error else line)

    def say(self, message: str) -> None:
        self.console.print(plain(message))


class _Described(ProgressColumn):
    """A bar's label and message, both text (a target's label comes from the matrix)."""

    def render(self, task: Task) -> Text:
        return fmt("[bold]{}[/] {}", task.fields.get("label", ""), task.fields.get("message", ""))


@contextmanager
def progress_display(console: Console) -> Iterator[RichDisplay]:
    columns = (SpinnerColumn(), _Described(), BarColumn(),
               TaskProgressColumn(), TimeElapsedColumn())
    # not a terminal: no live display (stopping one still printed an empty line: noise in a
    # pipe and before a one-line error)
    with Progress(*columns, console=console, transient=True,
                  disable=not console.is_terminal) as bars:
        yield RichDisplay(bars, console)


def _state(verdict: str) -> Text:
    colour = {"fixed": "green", "vulnerable": "red", "not_affected": "green"}.get(verdict,
                                                                                   "yellow")
    return fmt(f"[{colour}]{{}}[/]", verdict.replace("_", " "))


Cell = str | Text  # a str is shown as it is (never markup); a Text is fmt's


def print_rows(title: str, columns: list[str], rows: list[list[Cell]],
               console: Console) -> None:
    """A table when it fits the console (nothing truncated), else one block per row with every
    column named: readable at 80 columns and in a pipe, never a squeezed verdict."""
    cells = [[plain(cell) for cell in row] for row in rows]
    widths = [max([len(c), *(max((len(x) for x in row[i].plain.split("\n")), default=0)
                              for row in cells)]) for i, c in enumerate(columns)]
    if sum(widths) + 3 * len(columns) + 1 <= console.width:
        table = Table(title=plain(title), title_justify="left")
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in cells:
            table.add_row(*row)
        console.print(table)
        return
    console.print(fmt("[bold]{}[/]", title))
    for row in cells:
        console.print(fmt("[bold]{}[/]", row[0]))
        for column, cell in zip(columns[1:], row[1:], strict=True):
            console.print(fmt("  {}: {}", column, cell), soft_wrap=True)


def verify_rows(reports: list[TargetReport]) -> tuple[list[str], list[list[Cell]]]:
    """Per target the two answers apart: what Debian ships (what machines run) and whether our
    fix is verified; then the checks behind the second (vermagic, modversions CRCs, only the
    patched functions changed, and the load in a guest when asked)."""
    columns = ["kernel", "Debian's module", "our fix", "checks"]
    rows: list[list[Cell]] = []
    for r in reports:
        ours: Cell
        checks: Cell
        if r.error:
            ours, checks = fmt("[red]not built[/]"), fmt("[red]error[/]")
        elif r.source_state == "not-served":
            ours, checks = fmt("[yellow]not built[/]"), "sources not served"
        else:
            ours = fmt("[green]verified[/]") if r.ok else fmt("[red]NOT verified[/]")
            checks = Text(", ").join(_check_cell(name, passed)
                                     for name, passed in _named_checks(r))
        shipped: Cell = (_state(r.shipped_state) if r.shipped or r.source_state != "unknown"
                         else "-")
        if r.shipped is None and r.source_state != "unknown":
            shipped = fmt("{} (source)", shipped)
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


def _check_cell(name: str, passed: bool) -> Text:
    return fmt("{}", name) if passed else fmt("[red]{} NO[/]", name)


def print_summary(reports: list[TargetReport], console: Console) -> None:
    columns, rows = verify_rows(reports)
    print_rows("CVE-2025-40168: Debian's module (what machines run) and our fix", columns, rows,
               console)
    vulnerable = [r for r in reports if r.shipped_state != "fixed"]
    if vulnerable:
        console.print(fmt("[yellow]{} of {} kernel(s) ship a module that is not fixed[/]: "
                          "machines running them are exposed until they boot a fixed "
                      "Debian kernel or load our fixed module (--fail-on-vulnerable fails CI "
                      "on them)", len(vulnerable), len(reports)), soft_wrap=True)
    _print_per_fix(reports, console)
    for r in reports:
        for problem in r.problems:
            console.print(fmt("[red]problem {} {}:[/] {}", r.package_version, r.flavour, problem),
                          soft_wrap=True)
        for line in r.error_detail.splitlines():  # a build log's tail: its own lines
            console.print(fmt("[dim]{}[/]", line))
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
        console.print(fmt("per fix {} {}: {}", r.package_version, r.flavour, "; ".join(parts)),
                      soft_wrap=True)


def _print_notes(reports: list[TargetReport], console: Console) -> None:
    """Each note once: those every target shares together, the others under their target."""
    shared = set(reports[0].notes).intersection(*(r.notes for r in reports[1:])) \
        if len(reports) > 1 else set()
    for note in reports[0].notes if reports else []:
        if note in shared:
            console.print(fmt("[dim]note (every target): {}[/]", note), soft_wrap=True)
    for r in reports:
        for note in dict.fromkeys(r.notes):
            if note not in shared:
                console.print(fmt("[dim]note {} {}: {}[/]", r.package_version, r.flavour,
                                  note), soft_wrap=True)


# -- inspect ------------------------------------------------------------------------------------
def _say(console: Console) -> Any:
    """console.print for lines meant for grep: wrapped on a terminal only (piped, a line is
    whole, so `grep signature` gets all of it)."""
    return functools.partial(console.print, soft_wrap=not console.is_terminal)


def print_inspect(data: dict[str, Any], console: Console) -> None:
    say = _say(console)
    colour = {"fixed": "green", "vulnerable": "red"}.get(data["verdict"], "yellow")
    say(fmt(f"[bold]{{}}[/]: [{colour}]{{}}[/]", data["module"], data["verdict"]))
    vermagic = "none (no .modinfo vermagic)" if data["vermagic"] is None else data["vermagic"]
    say(fmt("  vermagic: {}   DWARF: {}", vermagic, "yes" if data["has_dwarf"] else "no"))
    say(fmt("  signature: {}", data.get("signature_text", "unsigned")))
    for fix in data.get("fixes", []):  # one line per fix of the series in the module
        shade = {"fixed": "green", "vulnerable": "red"}.get(fix["verdict"], "yellow")
        where = ", ".join(j["function"] for j in fix["judged"]) or ", ".join(fix["functions"])
        say(fmt(f"  {{}} [{shade}]{{}}[/] {{}}", f"{fix['cve'] or fix['fix']:<16}",
                          f"{fix['verdict']:<10}", where))
    if data.get("fixes"):
        first = data["fixes"][0]
        say(fmt("  {} in detail:", first["cve"] or first["fix"]))
    for reason in data["reasons"]:
        say(fmt("  - {}", reason))
    ev = data["evidence"]
    say(fmt("  fragments: {}",
                      ", ".join(f"{k} ({v} B)" for k, v in ev["fragments"].items())))
    for key in ("rcu_read_lock_sites", "rcu_read_unlock_sites", "dst_reference_sites"):
        sites = ", ".join(f"{s['target']}@{s['fragment']}+{s['offset']:#x}" for s in ev[key])
        say(fmt("  {}: {}", key.replace("_", " "), sites or "none"))
    say(fmt("  call targets: {}", ", ".join(ev["call_targets"])))
    if ev.get("dwarf_inlined") is not None:
        say(fmt("  DWARF inlined: {}", ", ".join(ev["dwarf_inlined"]) or "none"))
    for key, what in (("vermagic_ok", "vermagic matches --release"),
                      ("modversions_ok", "CRCs match --symvers")):
        if key in data:
            say(fmt("  {}: {}", what, {True: "yes", False: "no"}.get(data[key], "not known")))


# -- kernels, scan, dkms ------------------------------------------------------------------------
def print_kernels(title: str, targets: list[Target], console: Console) -> None:
    rows: list[list[Cell]] = []
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
    rows: list[list[Cell]] = []
    for r in result.rows:
        verdict = fmt("[red]error[/]") if r.error else _state(r.verdict)
        said: Cell = {"agree": fmt("[green]agrees[/]"),
                      "disagree": fmt("[red]DISAGREES[/]")}.get(r.changelog, r.changelog)
        if r.changelog_fixed_in:
            said = fmt("{} ({})", said, r.changelog_fixed_in)
        rows.append([r.package, r.version, r.suite, verdict, said, r.error or r.evidence])
    print_rows(f"CVE-2025-40168 in Debian's kernel images ({', '.join(result.suites)})",
               ["package", "version", "suite", "smc.ko", "changelog", "evidence"], rows, console)
    counts = {v: sum(1 for r in result.rows if r.verdict == v and not r.error)
              for v in ("vulnerable", "fixed", "not_affected", "unknown")}
    console.print(fmt("{} images in {:.1f} s: {}; downloaded {:.0f} MB ({} from the cache)",
                      len(result.rows), result.seconds,
                      ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n),
                      result.downloaded_bytes / 1e6,
                      sum(1 for r in result.rows if r.from_cache)))


def print_race(result: Any, console: Console) -> None:
    """`race`: commands.race.RaceResult."""
    debug = result.debug_kernel
    rows: list[list[Cell]] = []
    for r in result.runs:
        name = {"before": "before (vulnerable)", "after": "after (fixed)",
                "canary": "canary (RCU lock moved)"}.get(r.variant, r.variant)
        in_cve = sum(g["count"] for g in r.reports if g["scope"] == "cve-function")
        row: list[Cell] = [name + (", instrumented" if r.instrumented else ""),
                           str(r.attempts), str(r.prfx_match_calls),
                           str(r.returns.get("-19", 0)),
                           fmt("[red]{}[/]", len(r.splats)) if r.splats else "0"]
        if debug:
            row.append(fmt("[red]{}[/]", in_cve) if in_cve else "0")
        row += [fmt("[red]yes[/]") if r.reproduced else "no",
                r.outcome if r.outcome == "finished" else fmt("[red]{}[/]", r.outcome)]
        rows.append(row)
    columns = ["variant", "churn", "calls", "dev gone", "reports" if debug else "splats"]
    columns += ["in prfx_match"] if debug else []
    columns += ["reproduced", "guest"]
    what = (f"{result.release}, a {debug['title']} of Debian's {result.kernel} source (not "
            "Debian's binary kernel)" if debug else f"{result.release} ({result.kernel})")
    print_rows(f"CVE-2025-40168 under device churn: {what}", columns, rows, console)
    console.print(fmt("kernel command line (checkers): {}", result.cmdline))
    if debug:
        built = ("from the cache" if debug["from_cache"] else
                 f"built in {debug['build_seconds']:.0f} s")
        console.print(fmt("debug kernel: {} ({}), {}; kernel make: {}; module make: {}",
                          debug["sanitizer"], debug["title"], built,
                          " ".join(debug["kernel_make_args"]) or "(no variables)",
                          " ".join(debug["module_make_args"])))
        for key, value in debug["run_params"].items():
            console.print(fmt("during the churn only: {}.{}={}", debug["sanitizer"], key, value))
    for patch in sorted(set(result.widening.values())):
        what = ("a 20 ms re-read of the device" if patch.startswith("kcsan-")
                else "a 20 ms busy-wait")
        console.print(fmt("instrumented builds: {} ({}, not a fix)", patch, what))
    for r in result.runs:
        if debug:
            _print_reports(r, console)
        else:
            for line in r.splats[:3]:
                console.print(fmt("[red]{}:[/] {}", r.variant, line))
        if r.error:
            console.print(fmt("[yellow]{}:[/] {}", r.variant, r.error))
    caught = result.canary_caught
    if caught is not None:
        console.print(fmt("the RCU canary was caught: the checker is live") if caught else
                      fmt("[red]the RCU canary was NOT caught: the checker's silence proves "
                          "nothing[/]"))
    survived = result.fixed_survived
    console.print(fmt("the fixed module survived every attempt with no splat") if survived else
                  fmt("[red]the fixed module did not survive[/]") if survived is False else "")


_SCOPES = {"cve-function": "in smc_clc_prfx_match", "other-smc": "NOT explained by the fix "
           "(other SMC code)", "kernel": "outside SMC"}


def _print_reports(run: Any, console: Console) -> None:
    """A debug kernel's run: its reports by function, then what the checker saw, in words."""
    for g in run.reports:
        console.print(fmt("[red]{}:[/] {} x {} [{}]", run.variant, g["count"], g["title"],
                          _SCOPES.get(g["scope"], g["scope"])), soft_wrap=True)
    if run.verdict:
        console.print(fmt("{}: the module loaded is judged {}", run.variant, run.verdict))
    if run.finding:
        console.print(fmt("{}: {}", run.variant, run.finding), soft_wrap=True)


def print_dkms(summary: dict[str, Any], console: Console) -> None:
    say = _say(console)
    kind = "fixed sources" if summary.get("fixed_sources") else "DKMS package"
    say(fmt("{} {} {} for kernels {}: {}", kind, summary["name"], summary["version"],
                      summary["release_regex"], summary["package"]))
    for f in summary["fixes"]:
        done = ("applied in the sources (patches/" + f["patch"] + ")"
                if summary.get("fixed_sources") else "PATCH " + f["patch"]) if f["patch"] \
            else "no patch needed"
        say(fmt("  {}: {} in Debian's source -> {}", f["id"], f["state"], done))
    if summary.get("fixed_sources"):
        # a command to copy and run: the directory is one shell word whatever its name, and
        # module_src/<release> names the release it is for
        package = summary["package"]
        build = f"/lib/modules/{package.rstrip('/').rsplit('/', 1)[-1]}/build"
        say(fmt("  build: cd {} && make -C {} M=\"$PWD\"   (or dkms add \"$PWD\")",
                          shell_word(package), shell_word(build)))
    if summary["check"]:
        ck = summary["check"]
        say(fmt("  dkms build ({}, {} s) for {}: smc.ko {}, vermagic {}, modversions "
                          "{}, changed vs Debian's: {}; {}", ck["dkms"], ck["seconds"],
                          ck["release"], ck["verdict"], "ok" if ck["vermagic_ok"] else "MISMATCH",
                          "ok" if ck["modversions_ok"] else "MISMATCH",
                          ", ".join(ck["changed_vs_shipped"] or []) or "none",
                          ck["signature_text"]))


# -- host ---------------------------------------------------------------------------------------
_SMC = {"none": "[green]no SMC[/]", "no_modules": "no modules", "builtin": "[yellow]built in[/]"}


def host_rows(result: Any) -> tuple[list[str], list[list[Cell]]]:
    """`host`: commands.host.HostResult, one row per installed kernel."""
    columns = ["kernel", "running", "package", "smc.ko", "loaded", "loadable", "advice"]
    rows: list[list[Cell]] = []
    for s in result.kernels:
        k = s.kernel
        verdict = (fmt(_SMC[s.smc]) if s.smc in _SMC else
                   _state(s.verdict) if s.verdict != "unknown" else fmt("[yellow]undecided[/]"))
        package = f"{k.package} {k.version}" if k.package else "(not from a package)"
        loaded = {True: fmt("[red]yes[/]"), False: "no",
                  None: "?" if s.running else "-"}[s.loaded]
        is_running = fmt("[bold]yes[/]") if s.running else "no" if result.runtime.release \
            else "-"
        loadable: Cell
        if s.smc == "builtin":
            loadable = fmt("[red]yes[/] (built in)")
        elif s.smc != "module":
            loadable = "-"
        elif s.loadable:
            loadable = (fmt("[red]yes[/]") if s.autoloads else
                        fmt("[red]yes[/] (autoload stopped: {})", s.blocks[-1].text))
        else:
            loadable = fmt("[green]no[/]: {}", str(s.blocks[0]))
        advice = s.advice.describe() if s.advice else "-"
        rows.append([k.release, is_running, package, verdict, loaded, loadable, advice])
    return columns, rows


def print_host(result: Any, console: Console) -> None:
    columns, rows = host_rows(result)
    title = ("CVE-2025-40168 on this machine" if result.root == "/" else
             f"CVE-2025-40168 on the machine at {result.root}")
    if rows:
        print_rows(title, columns, rows, console)
    else:
        console.print(fmt("[bold]{}[/]: no kernels installed", title))
    for s in result.kernels:
        for note in s.notes:
            console.print(fmt("[dim]note {}: {}[/]", s.kernel.release, note), soft_wrap=True)
    for note in result.notes:
        console.print(fmt("[dim]note: {}[/]", note), soft_wrap=True)
    colour = "red" if result.exit_code else "green"
    console.print(fmt(f"[{colour}]{{}}[/]", result.summary), soft_wrap=True)
