"""`bench`: SMC handshake latency before vs after the fix: Debian's kernel in a QEMU guest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..guest import bench as benchmark
from ..guest import benchprep
from ..guest import machine as vm
from ..kernels import targets
from ..plumbing.cache import Cache
from . import EXIT_FAIL, EXIT_OK


@dataclass
class BenchOutcome:
    result: benchmark.BenchResult
    passed: bool  # no significant regression beyond the threshold
    gate_lines: list[str]  # one line per mode

    def exit_code(self, check: bool) -> int:
        return EXIT_FAIL if check and not self.passed else EXIT_OK


def run(kernel: str, variant: str, config: benchmark.BenchConfig, results: Path | None = None,
        cache_dir: Path | None = None, matrix_path: Path | None = None,
        progress: Callable[[str], None] | None = None,
        suite: str | None = None) -> BenchOutcome:
    """Verify the kernel's after-module (or build the canary), boot Debian's image with it and
    Debian's own module, measure, and judge the ratio against config.threshold."""
    cache = Cache.open(cache_dir)
    target = targets.resolve(cache, [kernel], "amd64", matrix_path=matrix_path, suite=suite)[0]
    inputs = benchprep.bench_inputs(cache, target, variant)
    guest = vm.prepare_guest_kernel(inputs.image_deb, cache.dir("vm"))
    out = results or Path("results") / f"bench-{kernel}-{variant}"
    result = benchmark.run_bench(guest, {"before": inputs.before, variant: inputs.candidate},
                                 config, out, cache_dir=cache.dir("vm"), progress=progress)
    passed, lines = benchmark.gate(result, config.threshold)
    return BenchOutcome(result, passed, lines)
