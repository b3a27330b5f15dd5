"""What the CLI commands do, minus the printing of options: resolve targets, run, report."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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

from . import hostpkg, inspection, patching, pipeline, report, signing, sources, targets
from .apt import Apt
from .cache import Cache
from .errors import BadInput, FetchError, InspectError, ToolMissing
from .targets import Target

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class VerifyRequest:
    kernels: list[str]
    flavour: str = "amd64"
    cache_dir: Path | None = None
    json_path: Path | None = None
    fixes: list[str] | None = None
    source: Path | None = None
    kdir: Path | None = None
    jobs: int | None = None
    parallel: int | None = None
    sign_key: Path | None = None
    sign_cert: Path | None = None
    matrix: Path | None = None  # --matrix: a kernels.toml of the user's (default: ours)
    patches: Path | None = None  # --patches: a patch series of the user's (default: ours)


def resolve_targets(cache: Cache, kernels: list[str], flavour: str,
                    apt_factory: Callable[[Cache], Apt] = Apt,
                    matrix_path: Path | None = None) -> list[Target]:
    """Matrix entries for known versions; archive lookups for the others (bad input if absent)."""
    matrix = targets.load_matrix(matrix_path)
    chosen = targets.select(matrix, kernels, flavour)
    missing = targets.unmatched(matrix, kernels)
    if missing:
        apt = apt_factory(cache)
        apt.update()
        for version in missing:
            try:
                found = sources.resolve_from_archive(apt, version, "amd64")
                chosen.extend(found.with_flavour(f) for f in targets.check_flavour(flavour))
            except FetchError as exc:  # say what the archive has instead
                known = ", ".join(t.version for t in matrix)
                raise BadInput(f"unknown kernel {version}: not in kernels.toml ({known}) and "
                               f"{exc}") from exc
    return chosen


def run_verify(request: VerifyRequest, console: Console) -> tuple[list[report.TargetReport], int]:
    cache = Cache.open(request.cache_dir)
    options = pipeline.Options(fixes=request.fixes or ["default"], jobs=request.jobs,
                               patches_dir=request.patches or pipeline.PATCHES_DIR)
    # bad --fix is bad input: say so before fetching anything
    pipeline.select_fixes(patching.load_series(options.patches_dir, "all"), options.fixes)
    if request.sign_key or request.sign_cert:  # a bad key is bad input: before any work
        if not (request.sign_key and request.sign_cert):
            raise BadInput("--sign-key and --sign-cert go together")
        signing.check_key_matches_cert(request.sign_key, request.sign_cert)
    if request.source or request.kdir:
        if not (request.source and request.kdir):
            raise BadInput("--source and --kdir go together")
        ws = sources.user_tree(request.source, request.kdir, request.flavour)
        plan: list[tuple[Target, sources.Workspace | None]] = [(ws.target, ws)]
    else:
        plan = [(t, None) for t in resolve_targets(cache, request.kernels, request.flavour,
                                                   matrix_path=request.matrix)]
    reports = run_plan(cache, plan, options, console, request.parallel)
    if request.sign_key and request.sign_cert:  # each signed module gets a note in its report
        signing.sign_plan(cache, plan, reports, request.sign_key, request.sign_cert)
    if request.json_path:
        report.write_json(request.json_path, report.document(reports))
    return reports, EXIT_OK if reports and all(r.ok for r in reports) else EXIT_FAIL


def run_plan(cache: Cache, plan: list[tuple[Target, sources.Workspace | None]],
             options: pipeline.Options, console: Console,
             parallel: int | None = None) -> list[report.TargetReport]:
    """Verify the targets, up to `parallel` at once (default: one per core), in one display.

    First every target is fetched; then the host tools all of them need are installed at once
    (one apt-get, before any parallel build could race for dpkg's lock); then the targets are
    built and inspected. The cores are shared: with N targets at once each make gets cores/N jobs,
    unless --jobs says.
    """
    cores = os.cpu_count() or 1
    workers = max(1, min(parallel or cores, len(plan)))
    if options.jobs is None:
        options = dataclasses.replace(options, jobs=max(1, cores // workers))
    labels = [f"{target.package_version} {target.flavour}" for target, _ in plan]
    # what fetching and patching need, before the targets fetch in parallel
    hostpkg.ensure([*sources.TOOLS, patching.TOOL], "fetch tools",
                   say=lambda message: console.print(escape(message)))
    with progress_display(console) as bars, ThreadPoolExecutor(max_workers=workers) as pool:
        reporters = [bars.reporter(label) for label in labels]
        fetched = list(pool.map(
            lambda i: (pipeline.Fetched(plan[i][0], plan[i][1]) if plan[i][1] is not None
                       else pipeline.fetch_target(cache, plan[i][0], reporters[i])),
            range(len(plan))))
        fetched = install_host_tools(fetched, console)
        futures = {pool.submit(pipeline.verify_fetched, cache, item, options, reporters[index]):
                   index for index, item in enumerate(fetched)}
        results: dict[int, report.TargetReport] = {}
        for future in as_completed(futures):
            index = futures[future]
            result = results[index] = future.result()
            bars.done(labels[index])
            console.print(f"{'[green]OK[/]' if result.ok else '[red]FAIL[/]'} {labels[index]} "
                          f"({result.timings.get('total', 0):.1f} s)"
                          + (f": {escape(result.error)}" if result.error else ""))
    return [results[i] for i in range(len(plan))]


def install_host_tools(fetched: list[pipeline.Fetched],
                       console: Console) -> list[pipeline.Fetched]:
    """Every host tool the fetched targets need, installed in one go; a target whose tools could
    not be had ends with that error (the others go on)."""
    needs = {id(item): pipeline.host_tools(item.workspace)
             for item in fetched if item.workspace is not None and item.error is None}
    try:
        hostpkg.ensure([tool for tools in needs.values() for tool in tools], "build tools",
                       say=lambda message: console.print(escape(message)))
        return fetched
    except ToolMissing as exc:
        error = exc
    # one install failed: each target finds out whether its own tools are there
    return [dataclasses.replace(item, error=error) if hostpkg.missing(needs.get(id(item), []))
            else item for item in fetched]


class _Bars:
    """One rich progress bar per target: a message, and a bar while work is measurable."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}

    def done(self, label: str) -> None:
        self.bars.remove_task(self.tasks.pop(label))

    def reporter(self, label: str) -> Callable[..., None]:
        task = self.tasks[label] = self.bars.add_task(f"[bold]{label}[/] waiting", total=None)

        def update(message: str, done: float | None = None, total: float | None = None) -> None:
            self.bars.update(task, description=f"[bold]{label}[/] {message}", total=total,
                             completed=done or 0)

        return update


@contextmanager
def progress_display(console: Console) -> Iterator[_Bars]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bars:
        yield _Bars(bars)


def matrix_text(fmt: str, flavour: str, matrix_path: Path | None = None) -> str:
    """The default matrix as CI jobs."""
    jobs = [{"kernel": t.version, "flavour": t.flavour, "package_version": t.package_version,
             "release": t.release}
            for t in targets.select(targets.load_matrix(matrix_path), [], flavour)]
    if fmt == "github":
        return json.dumps({"include": jobs}, separators=(",", ":"))
    if fmt == "json":
        return json.dumps(jobs, indent=2)
    if fmt == "text":
        return "\n".join(f"inv verify --kernel {j['kernel']} --flavour {j['flavour']} "
                         f"--json report-{j['kernel']}-{j['flavour']}.json" for j in jobs)
    raise BadInput(f"unknown format {fmt!r}: choose github, json or text")


def run_merge(directory: Path, json_out: Path | None) -> tuple[list[report.TargetReport], int]:
    if not directory.is_dir():
        raise BadInput(f"{directory}: not a directory of JSON reports")
    reports = report.merge(sorted(directory.glob("*.json")))
    if json_out:
        report.write_json(json_out, report.document(reports))
    return reports, EXIT_OK if all(r.ok for r in reports) else EXIT_FAIL


def run_inspect(module: Path, release: str | None = None,
                symvers: Path | None = None) -> tuple[dict[str, Any], int]:
    """Inspect any smc.ko / .ko.xz / smc_clc.o: exit 0 fixed, 1 vulnerable, 2 unknown."""
    if not module.exists():
        raise BadInput(f"{module}: no such file")
    info = inspection.inspect_module(module)
    data: dict[str, Any] = {
        "module": str(module), "name": info.name, "vermagic": info.vermagic,
        "srcversion": info.srcversion, "has_dwarf": info.has_dwarf, "stripped": info.stripped,
        "verdict": info.evidence.verdict, "reasons": info.evidence.reasons,
        "evidence": report.evidence_json(info),
    }
    try:
        sig = signing.module_signature(module)
        data["signature"], data["signature_text"] = sig, signing.describe(sig)
    except InspectError as exc:  # a damaged signature is reported, the verdict still stands
        data["signature"], data["signature_text"] = None, f"malformed: {exc.one_line()}"
    if release:
        data["vermagic_ok"], data["vermagic_detail"] = inspection.check_vermagic(info, release)
    if symvers:
        ok, mismatches = inspection.check_modversions(info, inspection.read_module_symvers(symvers))
        data["modversions_ok"], data["modversions_mismatches"] = ok, mismatches
    code = {"fixed": EXIT_OK, "vulnerable": EXIT_FAIL}.get(info.evidence.verdict, EXIT_BAD_INPUT)
    if data.get("vermagic_ok") is False or data.get("modversions_ok") is False:
        code = max(code, EXIT_FAIL)
    return data, code


def render_inspect(data: dict[str, Any], console: Console) -> None:
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


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2)
