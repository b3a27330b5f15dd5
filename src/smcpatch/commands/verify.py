"""`verify`: fetch → classify → variants → build → inspect → report, for every kernel asked for."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import BadInput, SmcpatchError, ToolMissing
from ..kernels import targets
from ..kernels.targets import Target
from ..packaging import signing
from ..pipeline import classify as patching
from ..pipeline import fetch as sources
from ..pipeline import flow as pipeline
from ..pipeline import report
from ..pipeline.fetch import Workspace
from ..plumbing import hostpkg
from ..plumbing.cache import Cache
from . import EXIT_FAIL, EXIT_OK
from .display import QUIET, Display


@dataclass
class VerifyRequest:
    kernels: list[str]
    flavour: str = ""
    arches: list[str] | None = None  # --arch: amd64 (default), arm64, s390x, all
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
    suite: str | None = None  # --suite: where to take a kernel several suites have
    load: bool = False  # --load: insmod each after-module into its kernel in a QEMU guest
    vex_path: Path | None = None  # --vex: OpenVEX statements of Debian's images and our modules
    junit_path: Path | None = None  # --junit: one test case per target and check


@dataclass
class VerifyResult:
    reports: list[report.TargetReport]
    exit_code: int


Plan = list[tuple[Target, Workspace | None]]


def run(request: VerifyRequest, display: Display = QUIET) -> VerifyResult:
    """Every check of the request is made before any download: bad input fails fast."""
    cache = Cache.open(request.cache_dir)
    options = pipeline.Options(fixes=request.fixes or ["default"], jobs=request.jobs,
                               patches_dir=request.patches or pipeline.PATCHES_DIR)
    if not options.selected_fixes:
        raise BadInput("no fixes selected: the series has no default fix")
    if request.sign_key or request.sign_cert:
        if not (request.sign_key and request.sign_cert):
            raise BadInput("--sign-key and --sign-cert go together")
        signing.check_key_matches_cert(request.sign_key, request.sign_cert)
    if request.source or request.kdir:
        if not (request.source and request.kdir):
            raise BadInput("--source and --kdir go together")
        ws = sources.user_tree(request.source, request.kdir,
                               request.flavour or targets.HOST_ARCH)
        plan: Plan = [(ws.target, ws)]
    else:
        arches = targets.check_arches(request.arches or [], request.flavour)
        plan = [(t, None) for t in targets.resolve(cache, request.kernels, request.flavour,
                                                   matrix_path=request.matrix,
                                                   suite=request.suite, arches=arches)]
    verified = run_plan(cache, plan, options, display, request.parallel)
    reports = [rep for _, rep in verified]
    if request.load:
        load_modules(cache, verified, display)
    if request.sign_key and request.sign_cert:  # each signed module gets a note in its report
        signing.sign_plan(cache, verified, request.sign_key, request.sign_cert)
    if request.json_path:
        report.write_json(request.json_path, report.document(reports))
    if request.vex_path:
        from ..outputs import openvex as vex

        timestamp = vex.now()
        vex.write(request.vex_path, vex.verify_statements(reports, timestamp), timestamp)
    if request.junit_path:
        from ..outputs import junit

        junit.write(request.junit_path, junit.verify_suite(reports))
    return VerifyResult(reports, EXIT_OK if reports and all(r.ok for r in reports) else EXIT_FAIL)


def run_plan(cache: Cache, plan: Plan, options: pipeline.Options, display: Display = QUIET,
             parallel: int | None = None) -> list[tuple[Workspace | None, report.TargetReport]]:
    """Verify the targets, up to `parallel` at once (default: one per core).

    First every target is fetched; then the host tools all of them need are installed at once
    (one apt-get, before any parallel build could race for dpkg's lock); then the targets are
    built and inspected. The cores are shared: with N targets at once each make gets cores/N jobs,
    unless --jobs says.
    """
    cores = os.cpu_count() or 1
    workers = max(1, min(parallel or cores, len(plan)))
    if options.jobs is None:  # (the same Options for every target: its fixes are read once)
        options.jobs = max(1, cores // workers)
    labels = [f"{target.package_version} {target.flavour}" for target, _ in plan]
    # what fetching and patching need, before the targets fetch in parallel
    hostpkg.ensure([*sources.TOOLS, patching.TOOL], "fetch tools", say=display.say)
    reporters = [display.reporter(label) for label in labels]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fetched = list(pool.map(
            lambda i: (pipeline.Fetched(plan[i][0], plan[i][1]) if plan[i][1] is not None
                       else pipeline.fetch_target(cache, plan[i][0], reporters[i])),
            range(len(plan))))
        fetched = install_host_tools(fetched, display)
        futures = {pool.submit(pipeline.verify_fetched, cache, item, options, reporters[index]):
                   index for index, item in enumerate(fetched)}
        results: dict[int, report.TargetReport] = {}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            display.done(labels[index], results[index])
    return [(fetched[i].workspace, results[i]) for i in range(len(plan))]


def load_modules(cache: Cache, verified: list[tuple[Workspace | None, report.TargetReport]],
                 display: Display = QUIET) -> None:
    """Boot each target's own kernel (any arch, QEMU TCG) and insmod its after-module; one guest
    at a time (TCG takes a core). The result joins the report and its checks."""
    from ..guest import loadcheck

    for ws, rep in verified:
        if ws is None or rep.after is None or rep.compile_only:
            continue  # nothing built (its error says why), or SMC off: nothing can load
        if ws.image_deb is None:
            rep.load = {"loaded": False, "detail": "no linux-image package to boot (a user tree: "
                                                   "--load needs an archive kernel)"}
        else:
            try:
                result = loadcheck.load_check(cache, ws.target.arch, ws.image_deb,
                                              Path(rep.after.path),
                                              display.reporter(f"{rep.package_version} "
                                                               f"{rep.flavour} load"))
                rep.load = result.to_json()
            except SmcpatchError as exc:
                rep.load = {"loaded": False, "detail": exc.one_line()}
        rep.finish()
        display.say(f"{rep.package_version} {rep.flavour}: {rep.load['detail']}")


def install_host_tools(fetched: list[pipeline.Fetched],
                       display: Display = QUIET) -> list[pipeline.Fetched]:
    """Every host tool the fetched targets need, installed in one go; a target whose tools could
    not be had ends with that error (the others go on)."""
    needs = {id(item): pipeline.host_tools(item.workspace)
             for item in fetched if item.workspace is not None and item.error is None}
    try:
        hostpkg.ensure([tool for tools in needs.values() for tool in tools], "build tools",
                       say=display.say)
        return fetched
    except ToolMissing as exc:
        error = exc
    # one install failed: each target finds out whether its own tools are there
    return [replace(item, error=error) if hostpkg.missing(needs.get(id(item), [])) else item
            for item in fetched]
