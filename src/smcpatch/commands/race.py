"""`race`: the vulnerable and the fixed module in Debian's own kernel under device churn, judged
by the kernel's own checkers; the window analysis beside the result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import RACE_WIDEN_PATCHES
from ..errors import BadInput
from ..guest import bench as benchmark
from ..guest import benchprep, race
from ..guest import machine as vm
from ..kernels import targets
from ..pipeline import build, report
from ..pipeline import fetch as sources
from ..pipeline import flow as pipeline
from ..plumbing import hostpkg
from ..plumbing.cache import Cache
from ..plumbing.progress import Progress, silent
from . import EXIT_FAIL, EXIT_OK

SCHEMA = "smcpatch-race/1"

# What reading the real 6.1 and 6.12 code (net/smc/smc_clc.c, net/core/dst.c, net/core/dev.c,
# net/ipv4/route.c, net/ipv4/fib_semantics.c of Debian's linux-source packages) and Debian's
# own compiled smc_clc_prfx_match() show. The README has the long form with the code lines.
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
    kernel: str = "6.12.107"
    attempts: int = 0
    seconds: float = 60.0
    widen: bool = False
    json_path: Path | None = None
    cache_dir: Path | None = None
    matrix: Path | None = None
    suite: str | None = None
    variants: tuple[str, ...] = ("before", "after")


@dataclass
class RaceResult:
    kernel: str
    release: str
    runs: list[race.VariantRun]
    cmdline: str
    checkers: list[str]
    widening: dict[str, str] = field(default_factory=dict)  # variant -> patch
    exit_code: int = EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kernel": self.kernel, "release": self.release,
                "kernel_cmdline": self.cmdline, "checkers": self.checkers,
                "widening": self.widening, "analysis": ANALYSIS,
                "variants": [r.to_json() for r in self.runs],
                "fixed_survived": self.fixed_survived, "ok": self.exit_code == EXIT_OK}

    @property
    def fixed_survived(self) -> bool | None:
        after = [r for r in self.runs if r.variant == "after"]
        if not after:
            return None
        return all(r.outcome == "finished" and not r.splats and r.prfx_match_calls > 0
                   for r in after)


def run(request: RaceRequest, progress: Progress = silent) -> RaceResult:
    config = race.RaceConfig(seconds=request.seconds, attempts=request.attempts)
    race.check_config(config)
    cache = Cache.open(request.cache_dir)
    target = targets.resolve(cache, [request.kernel], "", matrix_path=request.matrix,
                             suite=request.suite)[0]
    if target.foreign:
        raise BadInput("inv race runs the host's own architecture (amd64): the guest runs the "
                       "host's userland over 9p")
    ws = sources.fetch(cache, target, progress)
    hostpkg.ensure([*vm.host_tools(), *pipeline.host_tools(ws)], "race tools")
    verified = pipeline.verify_target(cache, target, pipeline.Options(), workspace=ws)
    if not verified.ok or verified.after is None or verified.before is None:
        raise BadInput(f"kernel {target.version}: not verified "
                       f"({'; '.join(verified.problems) or verified.error}): no race run")
    modules = _modules(cache, ws, verified, request.widen, progress)
    kernel = vm.prepare_guest_kernel(benchprep.image_deb(cache, ws), cache.dir("vm"))
    initramfs = vm.build_initramfs(kernel, cache.dir("vm"))
    helper = benchmark.build_helper(cache.dir("vm"))
    cmdline, checkers = race.checker_cmdline(build.KernelConfig.read(ws.kernel_config))
    results_dir = cache.dir("race", f"{target.key}-{int(time.time())}")
    runs = []
    for variant in request.variants:
        module, patch = modules[variant]
        progress(f"race: {variant} ({'instrumented, ' if patch else ''}{config.seconds:.0f} s "
                 "of churn)")
        runs.append(race.run_variant(kernel, initramfs, helper, variant, module, patch, config,
                                     cmdline, results_dir))
    result = RaceResult(kernel=target.package_version, release=target.release, runs=runs,
                        cmdline=cmdline, checkers=checkers,
                        widening={v: p for v, (_, p) in modules.items() if p})
    result.exit_code = EXIT_OK if result.fixed_survived is not False else EXIT_FAIL
    if request.json_path:
        report.write_json(request.json_path, result.to_json())
    return result


def _modules(cache: Cache, ws: sources.Workspace, verified: report.TargetReport, widen: bool,
             progress: Progress) -> dict[str, tuple[Path, str]]:
    """before: the vulnerable module (Debian's own for a vulnerable kernel), after: our fixed
    build; with widen, both rebuilt with the same busy-wait at the same point."""
    assert verified.before is not None and verified.after is not None
    before = (ws.shipped_module if verified.source_state == "vulnerable" and ws.shipped_module
              else Path(verified.before.path))
    if not widen:
        return {"before": (before, ""), "after": (Path(verified.after.path), "")}
    progress("race: building the widened variants")
    fixes = pipeline.Options().selected_fixes
    key = pipeline.variant_key(ws, fixes)
    variants = pipeline.variants_dir(cache, ws, fixes)
    sources_of = {v: _widened(cache, key, v, variants / v / "net" / "smc")
                  for v in ("before", "after")}
    built = build.build_variants(cache, f"{key}__race-widen", ws.kdir, sources_of["before"],
                                 sources_of["after"], env=pipeline.build_env(cache, ws))
    return {"before": (built.before.ko, RACE_WIDEN_PATCHES["before"].name),
            "after": (built.after.ko, RACE_WIDEN_PATCHES["after"].name)}


def _widened(cache: Cache, key: str, variant: str, src: Path) -> Path:
    return benchprep.patched_copy(cache, f"{key}__race-widen-{variant}",
                                  RACE_WIDEN_PATCHES[variant], src, f"the {variant} sources")
