"""`bench`: SMC handshake latency before vs after the fix: Debian's kernel in a QEMU guest.

`before` is Debian's shipped smc.ko (for a vulnerable kernel, the vulnerable code as users run
it), `after` our verified fixed build, and `canary` that fixed build with the package's
canary-prfx-match-delay.patch (a deliberate udelay(100) in smc_clc_prfx_match), which proves the
regression gate can fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import CANARY_PATCH
from ..errors import BadInput
from ..guest import latency, machine, share
from ..guest.kernel import prepare_guest_kernel
from ..kernels.matrix import GUEST_KERNEL
from ..kernels.request import KernelRequest
from ..pipeline import build, variants
from ..pipeline.fetch import image_deb
from ..pipeline.prepare import Prepared, prepare_one
from ..plumbing.cache import Cache
from ..plumbing.progress import QUIET, Display
from . import EXIT_FAIL, EXIT_OK

VARIANTS = ("after", "canary")


@dataclass
class BenchRequest:
    config: latency.BenchConfig
    kernel: str = GUEST_KERNEL
    suite: str | None = None
    matrix: Path | None = None
    variant: str = "after"
    results: Path | None = None  # default results/bench-<kernel>-<variant>
    cache_dir: Path | None = None

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise BadInput(f"--variant {self.variant}: choose {' or '.join(VARIANTS)}")
        self.config.check()


@dataclass
class BenchOutcome:
    result: latency.BenchResult
    passed: bool  # no significant regression beyond the threshold
    gate_lines: list[str]  # one line per mode

    def exit_code(self, check: bool) -> int:
        return EXIT_FAIL if check and not self.passed else EXIT_OK


def run(request: BenchRequest, display: Display = QUIET) -> BenchOutcome:
    """Verify the kernel's after-module (or build the canary), boot Debian's image with it and
    Debian's own module, measure, and judge the ratio against the threshold."""
    request.check()
    cache = Cache.open(request.cache_dir)
    prepared = prepare_one(cache, KernelRequest((request.kernel,), ("amd64",), suite=request.suite,
                                                 matrix=request.matrix), "benchmark", display,
                           tools=[*machine.host_tools(), *share.host_tools()])
    ws = prepared.workspace
    assert ws is not None and prepared.report.after is not None
    if ws.shipped_module is None:
        raise BadInput(f"kernel {request.kernel}: Debian ships no smc.ko for "
                       f"{ws.target.release} (SMC is off in its config): nothing to benchmark")
    candidate = Path(prepared.report.after.path)
    if request.variant == "canary":
        candidate = build_canary(cache, prepared)
    kernel = prepare_guest_kernel(image_deb(cache, ws), cache.dir("vm"))
    out = request.results or Path("results") / f"bench-{request.kernel}-{request.variant}"
    result = latency.run_bench(kernel, {"before": ws.shipped_module, request.variant: candidate},
                               request.config, out, cache_dir=cache.dir("vm"), progress=display.say)
    passed, lines = latency.gate(result, request.config.threshold)
    return BenchOutcome(result, passed, lines)


def build_canary(cache: Cache, prepared: Prepared) -> Path:
    """Our fixed sources plus the canary patch, built against the same kernel."""
    ws, made = prepared.workspace, prepared.variants
    assert ws is not None and made is not None
    after_src = variants.smc_dir(made.after)
    key = made.after.parent.name
    canary_src = variants.patched_copy(cache, f"{key}__canary", CANARY_PATCH, after_src,
                                       "the fixed sources")
    built = build.build_variants(cache, f"{key}__canary", ws.kdir, after_src, canary_src,
                                 env=build.environment(cache, ws))
    return built.after.ko
