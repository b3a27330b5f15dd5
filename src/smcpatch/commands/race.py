"""`race`: the vulnerable and the fixed module in Debian's own kernel under device churn, judged
by the kernel's own checkers; the window analysis beside the result."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..data import KCSAN_WIDEN_PATCHES, RACE_WIDEN_PATCHES, RCU_CANARY_PATCH
from ..errors import BadInput, BuildError
from ..guest import debugkernel, initramfs, machine, race, share
from ..guest.debugkernel import DebugKernel, Sanitizer
from ..guest.kernel import GuestKernel, prepare_guest_kernel
from ..inspection.judge import judge
from ..kernels.kconfig import KernelConfig
from ..kernels.matrix import GUEST_KERNEL
from ..kernels.request import KernelRequest
from ..pipeline import build, fetch, variants
from ..pipeline.fetch import image_deb
from ..pipeline.prepare import Prepared, prepare_one
from ..plumbing.cache import Cache
from ..plumbing.files import write_output
from ..plumbing.progress import QUIET, Display, Progress
from . import EXIT_FAIL, EXIT_OK

SCHEMA = "smcpatch-race/1"

# What reading the real 6.1 and 6.12 code (net/smc/smc_clc.c, net/core/dst.c, net/core/dev.c,
# net/ipv4/route.c, net/ipv4/fib_semantics.c of Debian's linux-source packages) and Debian's
# own compiled smc_clc_prfx_match() show. docs/race.md has the long form with the code lines.
ANALYSIS = (
    "Where the window is. The vulnerable smc_clc_prfx_match() pins the dst with sk_dst_get() "
    "(a reference: the dst itself cannot be freed) and reads dst->dev twice: once outside RCU, "
    "only to test it for NULL, and again inside rcu_read_lock() to look up the device's "
    "addresses. Debian's compiled code (6.1.176, objdump of smc_clc.o, identical to the shipped "
    "module) does exactly that: `cmp QWORD PTR [rbx],0x0` (the NULL test of dst->dev) before "
    "`call __rcu_read_lock`, then `mov rax,QWORD PTR [rbx]` reloads dst->dev after it (the "
    "call is a compiler barrier) and `mov rax,[rax+0x2e8]` reads dev->ip_ptr inside the "
    "read-side section. Unregistration swaps dst->dev for blackhole_netdev (dst_dev_put(): "
    "rt_flush_dev() in the NETDEV_UNREGISTER notifier for uncached routes, followed by "
    "synchronize_net() in unregister_netdevice_many(); or free_fib_info_rcu() for routes cached "
    "on a nexthop, an RCU callback) and drops the device reference; netdev_run_todo() frees the "
    "device once its references are gone. So the device the vulnerable code dereferences was "
    "loaded inside the same RCU read-side section as in the fixed code: the only access outside "
    "RCU reads the pointer's value, never the device. On Debian's builds the vulnerable code "
    "therefore has no window the fixed code lacks; what the fix changes is that the device is "
    "read once, with dst_dev_rcu() (a marked READ_ONCE paired with dst_dev_put()'s write: the "
    "data race KCSAN reports), inside the section, without taking and dropping a dst "
    "reference. A use-after-free needs the compiler to keep the pre-lock load across "
    "rcu_read_lock(), which it may not. Both variants share one narrower question we could not "
    "settle by reading: a nexthop-cached dst whose dst_dev_put() runs from an RCU callback "
    "after unregister_netdevice_many()'s last synchronize_net() has no further grace period "
    "between the swap and the free, so a reader that loaded dst->dev just before the swap "
    "relies on netdev_run_todo()'s rcu_barrier() and reference wait for its safety.")


@dataclass
class RaceRequest:
    kernel: str = GUEST_KERNEL
    attempts: int = 0
    seconds: float = 60.0
    widen: bool = False
    json_path: Path | None = None
    cache_dir: Path | None = None
    matrix: Path | None = None
    suite: str | None = None
    variants: tuple[str, ...] = ("before", "after")
    sanitizer: str | None = None  # kcsan | kasan: a debug kernel built from Debian's source
    canary: bool = False  # kasan: a third boot, our fix with its RCU lock moved (must be caught)


@dataclass
class RaceResult:
    kernel: str
    release: str
    runs: list[race.VariantRun]
    cmdline: str
    checkers: list[str]
    widening: dict[str, str] = field(default_factory=dict)  # variant -> patch
    exit_code: int = EXIT_OK
    # --sanitizer: the debug kernel booted instead of Debian's (debug_kernel_json); None without
    debug_kernel: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tool_version": __version__, "kernel": self.kernel,
                "release": self.release, "kernel_cmdline": self.cmdline, "checkers": self.checkers,
                "widening": self.widening, "analysis": ANALYSIS,
                "debug_kernel": self.debug_kernel,
                "variants": [r.to_json() for r in self.runs],
                "fixed_survived": self.fixed_survived, "canary_caught": self.canary_caught,
                "ok": self.exit_code == EXIT_OK}

    @property
    def fixed_survived(self) -> bool | None:
        after = [r for r in self.runs if r.variant == "after"]
        if not after:
            return None
        return all(r.outcome == "finished" and not r.splats and r.prfx_match_calls > 0
                   for r in after)

    @property
    def canary_caught(self) -> bool | None:
        """--canary: the checker reported our deliberately broken fix in smc_clc_prfx_match.
        False means the debug kernel's silence about the real variants proves nothing."""
        canary = [r for r in self.runs if r.variant == "canary"]
        return all(r.reproduced for r in canary) if canary else None


@dataclass
class _Guest:
    """What the variants boot: the kernel, the module of each variant (and the patch it was
    built with), the command line and what it switches on."""

    kernel: GuestKernel
    modules: dict[str, tuple[Path, str]]
    cmdline: str
    checkers: list[str]
    checker: Sanitizer | None = None
    debug: DebugKernel | None = None
    verdicts: dict[str, str] = field(default_factory=dict)


def run(request: RaceRequest, display: Display = QUIET) -> RaceResult:
    config = race.RaceConfig(seconds=request.seconds, attempts=request.attempts)
    race.check_config(config)
    checker = debugkernel.sanitizer(request.sanitizer) if request.sanitizer else None
    if request.canary and (checker is None or checker.name != "kasan"):
        raise BadInput("--canary needs --sanitizer kasan: it proves that lockdep's RCU check "
                       "is live (with KCSAN, --widen's vulnerable variant is the proof)")
    cache = Cache.open(request.cache_dir)
    prepared = prepare_one(cache, KernelRequest((request.kernel,), ("amd64",), suite=request.suite,
                                                 matrix=request.matrix), "race run", display,
                           tools=[*machine.host_tools(), *share.host_tools()],
                           check=(lambda t: debugkernel.check_target(t, checker))
                           if checker else None)
    ws = prepared.workspace
    assert ws is not None
    progress = display.reporter("race")
    guest = (_debug_guest(cache, prepared, checker, request.widen, request.canary, progress)
             if checker
             else _debian_guest(cache, prepared, request.widen, progress))
    image = initramfs.share_initramfs(guest.kernel, cache.dir("vm"))
    helper = share.build_helper(cache.dir("vm"))
    label = f"{ws.target.key}-{checker.name}" if checker else ws.target.key
    results_dir = cache.dir("race", f"{label}-{int(time.time())}")
    runs = []
    for variant in (*request.variants, *(("canary",) if request.canary else ())):
        module, patch = guest.modules[variant]
        progress(f"race: {variant} ({'instrumented, ' if patch else ''}{config.seconds:.0f} s "
                 "of churn)")
        run = race.run_variant(guest.kernel, image, helper, variant, module, patch, config,
                               guest.cmdline, results_dir,
                               kcsan_params=checker.run_params if checker else None,
                               whole_reports=checker is not None)
        if checker is not None and guest.debug is not None:
            run.verdict = guest.verdicts.get(variant, "")
            run.finding = race.finding(run, checker.name, KernelConfig.read(guest.debug.config),
                                       widened=bool(patch))
        runs.append(run)
    result = RaceResult(kernel=ws.target.package_version, release=guest.kernel.release, runs=runs,
                        cmdline=guest.cmdline, checkers=guest.checkers,
                        widening={v: p for v, (_, p) in guest.modules.items()
                                  if p and v != "canary"},
                        debug_kernel=debug_kernel_json(guest.debug, ws.target.source_package)
                        if guest.debug else None)
    result.exit_code = (EXIT_OK if result.fixed_survived is not False
                        and result.canary_caught is not False else EXIT_FAIL)
    if request.json_path:
        write_output(request.json_path,
                     json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n", "--json")
    return result


def _debian_guest(cache: Cache, prepared: Prepared, widen: bool, progress: Progress) -> _Guest:
    """Debian's own kernel, with the checkers its .config allows at boot."""
    ws = prepared.workspace
    assert ws is not None
    modules = _modules(cache, prepared, widen, progress)
    kernel = prepare_guest_kernel(image_deb(cache, ws), cache.dir("vm"))
    cmdline, checkers = race.checker_cmdline(KernelConfig.read(ws.kernel_config))
    return _Guest(kernel, modules, cmdline, checkers)


def _debug_guest(cache: Cache, prepared: Prepared, checker: Sanitizer, widen: bool,
                 canary: bool, progress: Progress) -> _Guest:
    """The debug kernel of the target's own source, and both variants built against it."""
    ws = prepared.workspace
    assert ws is not None
    cc = KernelConfig.read(ws.kernel_config).compiler_command
    debug = debugkernel.ensure(cache, ws.target, checker, cc,
                               lambda: fetch.full_source(cache, ws, progress),
                               fetch.full_source_present(cache, ws.target), progress)
    modules, verdicts = _debug_modules(cache, prepared, debug, widen, progress)
    if canary:
        modules["canary"], verdicts["canary"] = _rcu_canary(cache, prepared, debug, progress)
    cmdline, checkers = race.checker_cmdline(KernelConfig.read(debug.config), poison=False)
    return _Guest(debug.guest_kernel(), modules, " ".join([*checker.boot_params, cmdline]),
                  [*checker.checkers, *checkers], checker, debug, verdicts)


def _debug_modules(cache: Cache, prepared: Prepared, debug: DebugKernel, widen: bool,
                   progress: Progress) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """before: the target's SMC source as shipped (vulnerable), after: our fixed variant; with
    widen, both with the KCSAN widening twins. Built against the debug kernel (make -C <its
    build dir> M=...) and each judged by the inspector: an after-module not judged fixed is not
    run."""
    made = prepared.variants
    assert made is not None
    key = f"{made.after.parent.name}__{debug.checker.name}" + ("-kwiden" if widen else "")
    sides = {"before": variants.smc_dir(made.before), "after": variants.smc_dir(made.after)}
    patches = {v: "" for v in sides}
    if widen:
        progress("race: the KCSAN widening twins")
        for v in sides:
            sides[v] = variants.patched_copy(cache, f"{made.after.parent.name}__kcsan-widen-{v}",
                                             KCSAN_WIDEN_PATCHES[v], sides[v], f"the {v} sources")
            patches[v] = KCSAN_WIDEN_PATCHES[v].name
    progress(f"race: building both variants against the {debug.checker.title}")
    built = build.build_variants(cache, key, debug.build_dir, sides["before"], sides["after"],
                                 progress=progress, make_args=debug.module_make_args)
    verdicts = {}
    for v, module in (("before", built.before), ("after", built.after)):
        judged = judge(module.ko, release=debug.release,
                       symvers=debug.build_dir / "Module.symvers")
        verdicts[v] = judged.verdict
        if not judged.loadable:
            raise BuildError(f"the {v} module built against the {debug.checker.title} would not "
                             f"load into it: {judged.vermagic_detail or 'modversions differ'}")
    if verdicts["after"] != "fixed":
        raise BuildError(f"the fixed module built against the {debug.checker.title} is judged "
                         f"{verdicts['after']} by the inspector: not run ({built.after.ko})")
    return ({v: (m.ko, patches[v]) for v, m in (("before", built.before),
                                                ("after", built.after))}, verdicts)


def _rcu_canary(cache: Cache, prepared: Prepared, debug: DebugKernel,
                progress: Progress) -> tuple[tuple[Path, str], str]:
    """Our fixed source with its rcu_read_lock() moved after the device read (data/race/
    rcu-canary.patch), built against the debug kernel beside the fixed source as shipped: a
    module lockdep must report. Its inspector verdict is kept, whatever it says."""
    made = prepared.variants
    assert made is not None
    fixed = variants.smc_dir(made.after)
    canary = variants.patched_copy(cache, f"{made.after.parent.name}__rcu-canary",
                                   RCU_CANARY_PATCH, fixed, "the fixed sources")
    progress(f"race: building the RCU canary against the {debug.checker.title}")
    built = build.build_variants(cache, f"{made.after.parent.name}__{debug.checker.name}"
                                 "__rcu-canary", debug.build_dir, fixed, canary,
                                 progress=progress, make_args=debug.module_make_args)
    judged = judge(built.after.ko, release=debug.release,
                   symvers=debug.build_dir / "Module.symvers")
    if not judged.loadable:
        raise BuildError(f"the RCU canary built against the {debug.checker.title} would not "
                         f"load into it: {judged.vermagic_detail or 'modversions differ'}")
    return (built.after.ko, RCU_CANARY_PATCH.name), judged.verdict


def debug_kernel_json(debug: DebugKernel, source_package: str) -> dict[str, Any]:
    """What the race's JSON says of a debug kernel: how it was made and booted."""
    checker = debug.checker
    return {"sanitizer": checker.name, "title": checker.title, "release": debug.release,
            "source_package": source_package, "compiler": debug.compiler,
            "config_fragment": debug.fragment,
            "kernel_make_args": list(checker.kernel_make_args),
            "module_make_args": list(debug.module_make_args),
            "boot_params": list(checker.boot_params), "run_params": dict(checker.run_params),
            "build_dir": str(debug.build_dir), "from_cache": debug.from_cache,
            "build_seconds": round(debug.seconds, 1), "objects": debug.objects}


def _modules(cache: Cache, prepared: Prepared, widen: bool,
             progress: Progress) -> dict[str, tuple[Path, str]]:
    """before: the vulnerable module (Debian's own for a vulnerable kernel), after: our fixed
    build; with widen, both rebuilt with the same busy-wait at the same point."""
    ws, verified, made = prepared.workspace, prepared.report, prepared.variants
    assert ws is not None and made is not None
    assert verified.before is not None and verified.after is not None
    before = (ws.shipped_module if verified.source_state == "vulnerable" and ws.shipped_module
              else Path(verified.before.path))
    if not widen:
        return {"before": (before, ""), "after": (Path(verified.after.path), "")}
    progress("race: building the widened variants")
    key = made.after.parent.name
    sources_of = {v: variants.patched_copy(cache, f"{key}__race-widen-{v}",
                                           RACE_WIDEN_PATCHES[v], variants.smc_dir(side),
                                           f"the {v} sources")
                  for v, side in (("before", made.before), ("after", made.after))}
    built = build.build_variants(cache, f"{key}__race-widen", ws.kdir, sources_of["before"],
                                 sources_of["after"], env=build.environment(cache, ws))
    return {"before": (built.before.ko, RACE_WIDEN_PATCHES["before"].name),
            "after": (built.after.ko, RACE_WIDEN_PATCHES["after"].name)}
