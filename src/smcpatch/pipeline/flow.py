"""The verify pipeline for one target: fetch → classify → variants → build → inspect → result.

Each stage lives in its own module; this one sequences them, times them and turns their results
into a TargetReport. It also picks the build environment (host or a suite's chroot), says which host
tools a target needs, and caches the inspection's results. Errors raised by a stage end that
target (recorded as its error), so a matrix run reports every target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import inspection
from ..data import DEFAULT_PATCHES
from ..errors import BadInput, InspectError, SmcpatchError
from ..kernels import buildenv, chroot
from ..kernels.targets import Target
from ..plumbing import debmeta, hostpkg
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_inputs
from ..plumbing.progress import Progress, silent
from ..plumbing.suites import host_releases, release_of
from . import build
from . import classify as patching
from . import fetch as sources
from .report import ModuleReport, TargetReport

PATCHES_DIR = DEFAULT_PATCHES
PRIMARY_FUNCTION = "smc_clc_prfx_match"



@dataclass
class Options:
    fixes: list[str] = field(default_factory=lambda: ["default"])  # ids, `default` or `all`
    patches_dir: Path = PATCHES_DIR
    jobs: int | None = None

    @functools.cached_property
    def selected_fixes(self) -> list[patching.Fix]:
        """The series read and the fixes chosen once per run (bad input raises here)."""
        return select_fixes(patching.load_series(self.patches_dir, "all"), self.fixes)


def select_fixes(all_fixes: list[patching.Fix], wanted: list[str]) -> list[patching.Fix]:
    """`all`, `default` (the series' default set) or explicit fix ids."""
    if "all" in wanted:
        return all_fixes
    if not wanted or wanted == ["default"]:
        return [f for f in all_fixes if f.default]
    known = {f.id: f for f in all_fixes}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise BadInput(f"unknown fix {', '.join(unknown)}: choose all, default or one of "
                       f"{', '.join(known)}")
    return [known[w] for w in wanted]


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


@dataclass
class Fetched:
    """A target after the fetch stage: its workspace, or the error that ended it."""

    target: Target
    workspace: sources.Workspace | None = None
    error: SmcpatchError | None = None
    seconds: float = 0.0


def fetch_target(cache: Cache, target: Target, progress: Progress = silent) -> Fetched:
    """The fetch stage alone (a run fetches every target before it installs host tools)."""
    started = time.monotonic()
    try:
        ws = sources.fetch(cache, target, progress)
        settle_build_env(cache, ws)
        return Fetched(ws.target, ws, seconds=time.monotonic() - started)
    except SmcpatchError as exc:
        return Fetched(target, error=exc, seconds=time.monotonic() - started)


def settle_build_env(cache: Cache, ws: sources.Workspace) -> None:
    """A target with no pinned build environment gets the one of its kernel's own compiler."""
    if not ws.target.auto_build_env or ws.target.build_env or not ws.kernel_config.is_file():
        return
    from ..kernels.archive import Archive

    def archive() -> Archive:
        found = Archive(cache)
        found.update()
        return found

    hosts_release = release_of(ws.target.suite) in host_releases()
    choice = buildenv.choose(build.KernelConfig.read(ws.kernel_config), archive, hosts_release)
    ws.target = dataclasses.replace(ws.target, build_env=choice.suite,
                                    compiler=choice.compiler.split()[0])
    where = f"a {choice.suite} chroot" if choice.suite else "the host"
    what = (f"Debian's cross build of {choice.compiler.split()[0]} (the kernel's own compiler "
            f"is {choice.compiler}, CONFIG_CC_VERSION_TEXT)" if ws.target.foreign else
            f"{choice.compiler}, the kernel's own compiler (CONFIG_CC_VERSION_TEXT)")
    ws.notes.extend([*choice.notes, f"built in {where} with {what}"])


def host_tools(ws: sources.Workspace) -> list[hostpkg.Tool]:
    """What building this target needs on the host: its compiler and make, or the chroot tools
    when it builds in a chroot of its own suite (the chroot brings the compiler)."""
    if ws.target.build_env:
        return list(chroot.TOOLS)
    return build.toolchain_tools(build.KernelConfig.read(ws.kdir / ".config"))


def verify_target(cache: Cache, target: Target, options: Options,
                  progress: Progress = silent,
                  workspace: sources.Workspace | None = None) -> TargetReport:
    """Run every stage for one target; stage errors become the report's error."""
    fetched = (Fetched(target, workspace) if workspace is not None
               else fetch_target(cache, target, progress))
    return verify_fetched(cache, fetched, options, progress)


def verify_fetched(cache: Cache, fetched: Fetched, options: Options,
                   progress: Progress = silent) -> TargetReport:
    """Every stage after fetch; the fetch's error, or a later stage's, becomes the report's."""
    report = TargetReport.for_target(fetched.target)
    timer = _Timer()
    timer.timings["fetch"] = round(fetched.seconds, 3)
    started = time.monotonic()
    try:
        if fetched.error is not None:
            raise fetched.error
        assert fetched.workspace is not None
        _run_stages(cache, fetched.workspace, options, progress, report, timer)
    except SmcpatchError as exc:
        report.error = exc.one_line()
        report.error_detail = getattr(exc, "detail", "")
    report.timings = {**timer.timings,
                      "total": round(time.monotonic() - started + fetched.seconds, 3)}
    report.finish()
    return report


def _run_stages(cache: Cache, ws: sources.Workspace, options: Options, progress: Progress,
                report: TargetReport, timer: _Timer) -> None:
    fixes = options.selected_fixes
    report.timings_detail = dict(ws.timings)
    report.notes.extend(ws.notes)
    report.from_cache["fetch"] = ws.from_cache

    with timer.stage("classify"):
        progress("classify")
        states = patching.classify(ws.source_tree, fixes)
    report.set_states(states)
    if report.expect is None and ws.changelog is not None:
        _expect_from_changelog(ws.changelog, report)

    with timer.stage("variants"):
        variants = patching.make_variants(ws.source_tree, states, variants_dir(cache, ws, fixes))
    report.patch = variants.patch_action
    report.before_variant = ("reverted-for-before" if variants.patch_action == "already-present"
                             else "as-shipped")
    report.notes.extend(variants.notes)

    report.build_env = ws.target.build_env or "host"
    with timer.stage("build"):
        env = build_env(cache, ws, progress)
        in_use = (cache.lock(f"chroot-{ws.target.build_env}-in-use", shared=True)
                  if env.root else contextlib.nullcontext())
        with in_use:
            built = build.build_variants(cache, variant_key(ws, fixes), ws.kdir,
                                         _smc_dir(variants.before), _smc_dir(variants.after),
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
        _inspect_cached(cache, ws, built, states, report)


CVE = "CVE-2025-40168"


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


# Report fields that inspection fills in; cached as JSON beside the build.
INSPECT_FIELDS = ("before", "after", "shipped", "shipped_same_as_after", "shipped_same_as_before",
                  "vermagic_ok", "vermagic_detail", "modversions_ok", "modversions_mismatches",
                  "changed_functions", "expected_changed_functions", "layout_only_functions",
                  "inlined_patched_functions", "sibling_verdicts")


def _inspect_cached(cache: Cache, ws: sources.Workspace, built: build.BuildResult,
                    states: list[patching.FixState], report: TargetReport) -> None:
    """Inspection is pure in its inputs: reuse its results while modules and code are unchanged."""
    code = sorted(Path(inspection.__file__).parent.glob("*.py"))  # the whole inspection package
    inputs = [built.before.ko, built.after.ko, built.before.clc_object, built.after.clc_object,
              ws.symvers, *code, Path(__file__)]
    if ws.shipped_module is not None:
        inputs.append(ws.shipped_module)
    key = hash_inputs([_file_identity(p) for p in inputs], ws.target.release,
                      sorted({f for s in states for f in s.variant.functions}))
    entry = cache.dir("inspect", ws.target.key)
    if entry_is_current(entry, key):
        saved = json.loads((entry / "inspect.json").read_text())
        for name in INSPECT_FIELDS:
            value = saved[name]
            setattr(report, name, ModuleReport(**value) if name in ("before", "after", "shipped")
                    and value is not None else value)
        report.from_cache["inspect"] = True
        return
    _inspect(ws, built, states, report)
    with atomic_dir(entry, key) as tmp:
        data = {name: report.to_json()[name] for name in INSPECT_FIELDS}
        (tmp / "inspect.json").write_text(json.dumps(data))
    report.from_cache["inspect"] = False


def _sibling_verdicts(built: build.BuildResult, states: list[patching.FixState],
                      present: set[str]) -> list[dict[str, str]]:
    """Every other patched function where the vulnerable pattern lives (the before-build takes a
    dst reference in it), judged by the same principle as smc_clc_prfx_match."""
    verdicts = []
    for state in states:
        for function in state.variant.functions:
            if function == PRIMARY_FUNCTION or function not in present:
                continue
            try:
                before = inspection.inspect_function(built.before.ko, function).evidence
            except InspectError:  # only compiler clones of it exist (foo.isra.0): a helper
                continue
            if not before.dst_ref_sites:
                continue  # a helper (e.g. the *_rcu prefix walks): no dst handling of its own
            after = inspection.inspect_function(built.after.ko, function).evidence
            verdicts.append({"fix": state.fix_id, "function": function,
                             "before": before.verdict, "after": after.verdict})
    return verdicts


def _file_identity(path: Path) -> str:
    """Path, size, mtime and inode: any rewrite of a cache entry (atomic rename) changes it."""
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def _inspect(ws: sources.Workspace, built: build.BuildResult,
             states: list[patching.FixState], report: TargetReport) -> None:
    symvers = inspection.read_module_symvers(ws.symvers)
    before = inspection.inspect_module(built.before.ko, dwarf_object=built.before.clc_object)
    after = inspection.inspect_module(built.after.ko, dwarf_object=built.after.clc_object)
    report.before = ModuleReport.from_info(before, built.before.ko)
    report.after = ModuleReport.from_info(after, built.after.ko)

    report.vermagic_ok, report.vermagic_detail = inspection.check_vermagic(after, ws.target.release)
    report.modversions_ok, report.modversions_mismatches = inspection.check_modversions(
        after, symvers)

    patched = {f for s in states for f in s.variant.functions}
    # a patched static helper the compiler inlined everywhere has no code of its own to differ
    bodies_before = inspection.function_bodies(built.before.ko)
    bodies_after = inspection.function_bodies(built.after.ko)
    present = {name.split(".", 1)[0] for name in (*bodies_before, *bodies_after)}
    report.expected_changed_functions = sorted(patched & present)
    report.inlined_patched_functions = sorted(patched - present)
    changed = inspection.changed_between(bodies_before, bodies_after)
    # A function the patch doesn't touch may differ only in padding (its start moved): say so
    # apart, after checking its instruction stream is the same.
    layout_only = [f for f in changed if f not in report.expected_changed_functions
                   and inspection.layout_only_change(built.before.ko, built.after.ko, f)]
    report.changed_functions = sorted(set(changed) - set(layout_only))
    report.layout_only_functions = sorted(layout_only)
    report.sibling_verdicts = _sibling_verdicts(built, states, present)

    if ws.shipped_module is not None:
        shipped = inspection.inspect_module(ws.shipped_module)
        report.shipped = ModuleReport.from_info(shipped, ws.shipped_module)
        fixed_side = built.after.ko if report.source_state == "fixed" else None
        if fixed_side is not None:
            report.shipped_same_as_after = inspection.same_function(
                ws.shipped_module, fixed_side, PRIMARY_FUNCTION)
        else:
            report.shipped_same_as_before = inspection.same_function(
                ws.shipped_module, built.before.ko, PRIMARY_FUNCTION)


def build_env(cache: Cache, ws: sources.Workspace,
              progress: Progress = silent) -> build.BuildEnv:
    """The host, or a cached chroot of the kernel's own suite (its compiler, its glibc)."""
    suite = ws.target.build_env
    if not suite:
        return build.BuildEnv()
    if ws.kdir_root is None:
        raise BadInput(f"{ws.target.version}: a {suite} build environment needs the extracted "
                       "headers tree")
    progress(f"{suite} chroot")
    packages = chroot.cached_build_packages(cache, ws.target)
    root = chroot.ensure_chroot(cache, suite, packages)
    return build.BuildEnv(root=root, binds=(ws.kdir_root,))


def variants_dir(cache: Cache, ws: sources.Workspace, fixes: list[patching.Fix]) -> Path:
    """Where the before/after sources of this target and fix set live in the cache."""
    return cache.dir("variants", variant_key(ws, fixes))


def variant_key(ws: sources.Workspace, fixes: list[patching.Fix]) -> str:
    ids = "+".join(sorted(f.id for f in fixes)) if fixes else "none"
    return f"{ws.target.key}__{_short(ids)}"


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _smc_dir(root: Path) -> Path:
    return root / "net" / "smc" if (root / "net" / "smc").is_dir() else root
