"""Everything smcpatch shows a person, with rich: progress bars, the verify table, the inspect
evidence, the kernel list, the dkms summary. Only the CLI imports this module: the stages and the
commands never import rich, so the library works without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

from ..kernels.targets import Target
from ..pipeline.report import ModuleReport, TargetReport
from ..plumbing.progress import Progress as ProgressCallback


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
        self.console.print(f"{'[green]OK[/]' if report.ok else '[red]FAIL[/]'} {label} "
                           f"({report.timings.get('total', 0):.1f} s)"
                           + (f": {escape(report.error)}" if report.error else ""))

    def say(self, message: str) -> None:
        self.console.print(escape(message))


@contextmanager
def progress_display(console: Console) -> Iterator[RichDisplay]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        yield RichDisplay(bars, console)


def _mark(value: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[value]


def _verdict(module: ModuleReport | None) -> str:
    if module is None:
        return "-"
    colour = {"fixed": "green", "vulnerable": "red"}.get(module.verdict, "yellow")
    return f"[{colour}]{module.verdict}[/]"


def verify_table(reports: list[TargetReport]) -> Table:
    out = Table(title="smcpatch: CVE-2025-40168 (smc_clc_prfx_match) verification",
                show_lines=False)
    loads = any(r.load is not None for r in reports)
    for column in ("kernel", "arch", "release", "built in", "source", "patch", "before",
                   "after", "shipped", "vermagic", "modversions", "changed fns",
                   *(("loads",) if loads else ()), "time s", "ok"):
        out.add_column(column, no_wrap=column in ("kernel", "release"))
    for r in reports:
        changed = ",".join(r.changed_functions) or "-"
        if r.changed_functions and not r.changed_functions_ok:
            changed = f"[red]{changed}[/]"
        off = "n/a: SMC off" if r.compile_only else None
        loaded = ([off or _mark(r.load.get("loaded") if r.load is not None else None)]
                  if loads else [])
        out.add_row(
            r.package_version, r.arch, r.release, r.build_env, r.source_state, r.patch or "-",
            _verdict(r.before), _verdict(r.after), _verdict(r.shipped),
            off or _mark(r.vermagic_ok), off or _mark(r.modversions_ok), changed, *loaded,
            f"{r.timings.get('total', 0):.1f}",
            "[green]OK[/]" if r.ok else "[red]FAIL[/]",
        )
    return out


def print_summary(reports: list[TargetReport], console: Console) -> None:
    console.print(verify_table(reports))
    for r in reports:
        for problem in r.problems:
            console.print(f"[red]{r.package_version} {r.flavour}:[/] {escape(problem)}")
        if r.error_detail:
            console.print(f"[dim]{escape(r.error_detail)}[/]")
        for note in r.notes:
            console.print(f"[dim]{r.package_version} {r.flavour}: {escape(note)}[/]")


# -- inspect ------------------------------------------------------------------------------------
def print_inspect(data: dict[str, Any], console: Console) -> None:
    colour = {"fixed": "green", "vulnerable": "red"}.get(data["verdict"], "yellow")
    console.print(f"[bold]{data['module']}[/]: [{colour}]{data['verdict']}[/]")
    console.print(f"  vermagic: {data['vermagic']}   DWARF: {'yes' if data['has_dwarf'] else 'no'}")
    console.print(f"  signature: {data.get('signature_text', 'unsigned')}")
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


# -- kernels, dkms ------------------------------------------------------------------------------
def kernels_table(title: str, targets: list[Target]) -> Table:
    table = Table(title=title)
    for column in ("version", "package version", "suite", "arch", "release", "packages",
                   "expect"):
        table.add_column(column)
    for t in targets:
        own = f":{t.arch}" if t.foreign else ""  # a foreign kernel's own-arch packages
        packages = "\n".join((t.source_package, t.headers_package + own,
                              t.common_headers_package, t.kbuild, t.image_package + own))
        table.add_row(t.version, t.package_version, t.suite, t.arch, t.release, packages,
                      t.expect or "-")
    return table


def archive_table(rows: list[Any]) -> Table:
    """`kernels --archive`: commands.kernels.ArchiveKernel rows."""
    table = Table(title="kernels of the archive (every suite the host's mirrors serve)")
    for column in ("version", "package version", "suite", "arch", "release", "Debian's smc.ko",
                   "our fix"):
        table.add_column(column, no_wrap=column in ("package version", "release"))
    for r in rows:
        table.add_row(r.version, r.package_version, r.suite, r.arch,
                      r.release or "(no headers)", r.state, r.verified)
    return table


def scan_table(rows: list[Any], suites: tuple[str, ...]) -> Table:
    """`scan`: features.scan.ScanRow rows."""
    table = Table(title=f"CVE-2025-40168 in Debian's kernel images ({', '.join(suites)})")
    for column in ("package", "version", "suite", "arch", "flavour", "verdict", "evidence",
                   "changelog"):
        table.add_column(column, no_wrap=column in ("package", "version"))
    for r in rows:
        verdict = ("[red]error[/]" if r.error else
                   {"fixed": "[green]fixed[/]", "vulnerable": "[red]vulnerable[/]",
                    "not_affected": "[green]not affected[/]"}.get(r.verdict,
                                                                  f"[yellow]{r.verdict}[/]"))
        said = {"agree": "[green]agree[/]", "disagree": "[red]DISAGREE[/]"}.get(
            r.changelog, r.changelog)
        if r.changelog_fixed_in:
            said += f" ({r.changelog_fixed_in})"
        table.add_row(r.package, r.version, r.suite, r.arch, r.flavour, verdict,
                      escape(r.error or r.evidence), said)
    return table


def print_race(result: Any, console: Console) -> None:
    """`race`: commands.race.RaceResult."""
    table = Table(title=f"CVE-2025-40168 under device churn: {result.release} "
                        f"({result.kernel}), QEMU TCG")
    for column in ("variant", "module", "attempts", "handshakes", "prfx_match calls",
                   "device gone", "seconds", "splats", "reproduced", "guest"):
        table.add_column(column)
    for r in result.runs:
        name = {"before": "before (vulnerable)", "after": "after (fixed)"}.get(r.variant,
                                                                               r.variant)
        table.add_row(name + (", instrumented" if r.instrumented else ""),
                      escape(r.module.rsplit("/", 1)[-1]), str(r.attempts), str(r.handshakes),
                      str(r.prfx_match_calls), str(r.returns.get("-19", 0)), f"{r.seconds:.0f}",
                      f"[red]{len(r.splats)}[/]" if r.splats else "0",
                      "[red]yes[/]" if r.reproduced else "no",
                      r.outcome if r.outcome == "finished" else f"[red]{r.outcome}[/]")
    console.print(table)
    console.print(f"kernel command line (checkers): {escape(result.cmdline)}")
    for patch in sorted(set(result.widening.values())):
        console.print(f"instrumented builds: {patch} (a 20 ms busy-wait, not a fix)")
    for r in result.runs:
        for line in r.splats[:3]:
            console.print(f"[red]{r.variant}:[/] {escape(line)}")
        if r.error:
            console.print(f"[yellow]{r.variant}:[/] {escape(r.error)}")
    survived = result.fixed_survived
    console.print("the fixed module survived every attempt with no splat" if survived else
                  "[red]the fixed module did not survive[/]" if survived is False else "")


def print_dkms(summary: dict[str, Any], console: Console) -> None:
    console.print(f"DKMS package {summary['name']} {summary['version']} for kernels "
                  f"{summary['release_regex']}: {summary['package']}")
    for f in summary["fixes"]:
        console.print(f"  {f['id']}: {f['state']} in the source -> "
                      + (f"PATCH {f['patch']}" if f["patch"] else "no patch needed"))
    if summary["check"]:
        ck = summary["check"]
        console.print(f"  dkms build ({ck['dkms']}, {ck['seconds']} s) for "
                      f"{ck['release']}: smc.ko {ck['verdict']}, vermagic "
                      f"{'ok' if ck['vermagic_ok'] else 'MISMATCH'}, modversions "
                      f"{'ok' if ck['modversions_ok'] else 'MISMATCH'}, changed vs "
                      f"Debian's: {', '.join(ck['changed_vs_shipped'] or []) or 'none'}; "
                      f"{ck['signature_text']}")

