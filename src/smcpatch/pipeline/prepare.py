"""The one way into the pipeline: `prepare()` resolves the kernels a request names and takes each
through fetch → classify → variants → build → inspect, returning per target its report and what
the stages made (the workspace, the fix states, the variants, the built modules).

Every command that needs a kernel enters here: verify (many targets), dkms (through classify),
bench and race (one verified target). All targets are fetched first; then every host tool any of
them needs is installed in one apt-get (before parallel builds could race for dpkg's lock); then
the targets run their stages, up to `parallel` at once. A stage's error ends its target only
(recorded as the report's error), so a matrix run reports every target.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..cve import CVE
from ..data import DEFAULT_PATCHES
from ..errors import BadInput, SmcpatchError, ToolMissing
from ..kernels import chroot
from ..kernels.kconfig import KernelConfig, toolchain_tools
from ..kernels.request import KernelRequest
from ..kernels.resolve import resolve
from ..kernels.targets import HOST_ARCH, Target
from ..plumbing import debmeta, hostpkg, proc
from ..plumbing.cache import Cache
from ..plumbing.progress import QUIET, Display, Progress, silent
from . import build, classify, fetch, inspect, variants
from .build import BuildResult
from .classify import Fix, FixState
from .fetch import Workspace
from .report import TargetReport
from .variants import Variants

Through = Literal["classify", "inspect"]


@dataclass
class Options:
    fixes: list[str] = field(default_factory=lambda: ["default"])  # ids, `default` or `all`
    patches_dir: Path = DEFAULT_PATCHES
    jobs: int | None = None  # make -j (default: the cores shared by the targets at once)
    through: Through = "inspect"  # dkms stops after classify: it builds with dkms itself

    @functools.cached_property
    def selected_fixes(self) -> list[Fix]:
        """The series read and the fixes chosen once per run (bad input raises here)."""
        return classify.load_series(self.patches_dir, self.fixes)


@dataclass
class Prepared:
    """One target after the pipeline: its report, and what the stages made."""

    target: Target
    report: TargetReport
    workspace: Workspace | None = None
    states: list[FixState] = field(default_factory=list)
    variants: Variants | None = None
    built: BuildResult | None = None

    @property
    def label(self) -> str:
        return f"{self.target.package_version} {self.target.flavour}"


def prepare(cache: Cache, kernels: KernelRequest | list[Target], options: Options | None = None,
            display: Display = QUIET, parallel: int | None = None,
            tools: Sequence[hostpkg.Tool] = ()) -> list[Prepared]:
    """Take every target through the stages, up to `parallel` at once (default: one per core).

    kernels: a request (resolved here), or targets a command resolved itself to refuse some
    before any download. `tools`: other host tools the caller needs (the guest's), installed in
    the same apt-get.
    """
    options = options or Options()
    options.selected_fixes  # noqa: B018 - a bad --fix or series: before any download
    targets = resolve(cache, kernels) if isinstance(kernels, KernelRequest) else kernels
    cores = os.cpu_count() or 1
    workers = max(1, min(parallel or cores, len(targets) or 1))
    if options.jobs is None:  # the cores are shared: each make gets cores/N jobs
        options.jobs = max(1, cores // workers)
    hostpkg.ensure([*fetch.TOOLS, classify.TOOL], "fetch tools", say=display.say)
    labels = [f"{t.package_version} {t.flavour}" for t in targets]
    reporters = [display.reporter(label) for label in labels]
    with ThreadPoolExecutor(max_workers=workers) as pool, proc.stopped_on_interrupt():
        fetched = list(pool.map(lambda i: fetch_target(cache, targets[i], reporters[i]),
                                range(len(targets))))
        fetched = install_host_tools(fetched, display, tools, options.through)
        futures = {pool.submit(run_stages, cache, item, options, reporters[i]): i
                   for i, item in enumerate(fetched)}
        results: dict[int, Prepared] = {}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            display.done(labels[index], results[index].report)
    return [results[i] for i in range(len(targets))]


def prepare_one(cache: Cache, request: KernelRequest, purpose: str, display: Display = QUIET,
                tools: Sequence[hostpkg.Tool] = (),
                check: Callable[[Target], None] | None = None) -> Prepared:
    """One kernel of the host's architecture, verified (its after-module fixed, every check
    passed), for a command that loads modules into a guest (bench, race). `check` refuses a
    resolved target before anything is fetched (race --sanitizer: no debug kernel of it)."""
    targets = resolve(cache, request)
    if len(targets) != 1:
        raise BadInput(f"{purpose} runs one kernel: give one --kernel (and one flavour)")
    if targets[0].foreign:
        raise BadInput(f"{purpose} runs the host's own architecture ({HOST_ARCH}): the guest "
                       "runs the host's userland over 9p")
    if check is not None:
        check(targets[0])
    [prepared] = prepare(cache, targets, Options(), display, tools=tools)
    report = prepared.report
    if not report.ok or report.after is None or prepared.workspace is None:
        raise BadInput(f"kernel {prepared.target.version}: not verified "
                       f"({'; '.join(report.problems) or report.error}): no {purpose}")
    if report.compile_only:
        raise BadInput(f"kernel {prepared.target.version}: SMC is off in its config (compiled "
                       f"and inspected only): nothing can load, no {purpose}")
    return prepared


def verify_target(cache: Cache, target: Target, options: Options | None = None,
                  progress: Progress = silent, workspace: Workspace | None = None) -> TargetReport:
    """One resolved target through every stage (its tools must be on the host); a workspace
    already fetched is used as it is."""
    fetched = (Fetched(target, workspace) if workspace is not None
               else fetch_target(cache, target, progress))
    return run_stages(cache, fetched, options or Options(), progress).report


@dataclass
class Fetched:
    """A target after the fetch stage: its workspace, or the error that ended it."""

    target: Target
    workspace: Workspace | None = None
    error: SmcpatchError | None = None
    seconds: float = 0.0


def fetch_target(cache: Cache, target: Target, progress: Progress = silent) -> Fetched:
    started = time.monotonic()
    try:
        return Fetched(target, fetch.fetch(cache, target, progress),
                       seconds=time.monotonic() - started)
    except SmcpatchError as exc:
        return Fetched(target, error=exc, seconds=time.monotonic() - started)


def host_tools(ws: Workspace, through: Through = "inspect") -> list[hostpkg.Tool]:
    """What this target's stages need on the host: its compiler and make, or the chroot tools
    when it builds in a chroot of its own suite (the chroot brings the compiler)."""
    if through == "classify" or ws.target.judge_only:
        return []
    if ws.target.build_env:
        return list(chroot.TOOLS)
    return toolchain_tools(KernelConfig.read(ws.kernel_config))


def install_host_tools(fetched: list[Fetched], display: Display = QUIET,
                       extra: Sequence[hostpkg.Tool] = (),
                       through: Through = "inspect") -> list[Fetched]:
    """Every host tool the fetched targets need, installed in one go; a target whose tools
    could not be had ends with that error (the others go on)."""
    needs = {id(item): host_tools(item.workspace, through)
             for item in fetched if item.workspace is not None and item.error is None}
    try:
        hostpkg.ensure([*extra, *(tool for tools in needs.values() for tool in tools)],
                       "build tools", say=display.say)
        return fetched
    except ToolMissing as exc:
        if hostpkg.missing(extra):
            raise  # the caller's own tools: nothing can go on
        error = exc
    return [replace(item, error=error) if hostpkg.missing(needs.get(id(item), [])) else item
            for item in fetched]


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - started, 3)


def run_stages(cache: Cache, fetched: Fetched, options: Options,
               progress: Progress = silent) -> Prepared:
    """Every stage after fetch; the fetch's error, or a later stage's, becomes the report's."""
    prepared = Prepared(fetched.target, TargetReport.for_target(fetched.target),
                        fetched.workspace)
    timer = _Timer()
    timer.timings["fetch"] = round(fetched.seconds, 3)
    started = time.monotonic()
    try:
        if fetched.error is not None:
            raise fetched.error
        _stages(cache, prepared, options, progress, timer)
    except SmcpatchError as exc:
        prepared.report.error = exc.one_line()
        prepared.report.error_detail = getattr(exc, "detail", "")
    prepared.report.timings = {**timer.timings,
                               "total": round(time.monotonic() - started + fetched.seconds, 3)}
    prepared.report.finish()
    return prepared


def _stages(cache: Cache, prepared: Prepared, options: Options, progress: Progress,
            timer: _Timer) -> None:
    ws, report, fixes = prepared.workspace, prepared.report, options.selected_fixes
    assert ws is not None
    report.timings_detail = dict(ws.timings)
    report.notes.extend(ws.notes)
    report.from_cache["fetch"] = ws.from_cache
    report.image_package, report.image_sha256 = ws.image_package, ws.image_sha256
    report.image_module_path = ws.image_module_path
    if ws.target.judge_only:  # the image alone is served: Debian's module, nothing to build
        report.source_state = "not-served"
        if ws.changelog is not None:
            _expect_from_changelog(ws.changelog, report)
        with timer.stage("inspect"):
            progress("inspect")
            inspect.inspect_shipped(ws, report)
        return

    with timer.stage("classify"):
        progress("classify")
        prepared.states = states = classify.classify(ws.source_tree, fixes)
    report.set_states(states)
    if report.expect is None and ws.changelog is not None:
        _expect_from_changelog(ws.changelog, report)
    if options.through == "classify":
        return

    with timer.stage("variants"):
        prepared.variants = made = variants.make_variants(
            ws.source_tree, states, variants.variants_dir(cache, ws.target, fixes))
    report.patch = made.patch_action
    report.before_variant = ("reverted-for-before" if made.patch_action == "already-present"
                             else "as-shipped")
    report.notes.extend(made.notes)

    report.build_env = ws.target.build_env or "host"
    with timer.stage("build"):
        env = build.environment(cache, ws, progress)
        in_use = (cache.lock(f"chroot-{ws.target.build_env}-in-use", shared=True)
                  if env.root else contextlib.nullcontext())
        with in_use:
            prepared.built = built = build.build_variants(
                cache, variants.variant_key(ws.target, fixes), ws.kdir,
                variants.smc_dir(made.before), variants.smc_dir(made.after),
                progress=progress, jobs=options.jobs, env=env)
    report.from_cache["build"] = built.from_cache
    report.compile_only = built.compile_only
    report.compiler = built.compiler
    report.notes.extend(built.notes)
    report.timings_detail["build_before"] = round(built.before.seconds, 3)
    report.timings_detail["build_after"] = round(built.after.seconds, 3)
    report.recompiled_for_after = built.after.compiled

    with timer.stage("inspect"):
        progress("inspect")
        inspect.inspect_target(cache, ws, built, states, report)


def _expect_from_changelog(changelog: Path, report: TargetReport) -> None:
    """A kernel resolved from the archive (not pinned) gets its expectation from Debian's own
    changelog of the image: naming the CVE means Debian says it is fixed there; silence, that
    Debian does not claim a fix (changelogs are cumulative: every later kernel names it)."""
    mention = debmeta.cve_mention(debmeta.read_changelog(changelog), CVE)
    report.expect = "fixed" if mention.says_fixed else "vulnerable"
    report.expect_from = "Debian's changelog"
    report.notes.append(f"Debian's changelog names {CVE} in {mention.version}: {mention.line}"
                        if mention.says_fixed else
                        f"Debian's changelog of this image does not name {CVE}: no fix claimed")
