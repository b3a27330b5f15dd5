"""SMC handshake latency before vs after the fix, in a QEMU guest running the real kernel.

Host side: builds the guest helper, writes the guest configuration into the results share, boots
the guest (guest.machine), then turns the guest's pyperf JSON into statistics (after/before ratio of
medians with a bootstrap 95% CI per mode), `pyperf compare_to` output, a PNG plot and summary.md.
`gate()` is the `--check` logic.

Variants: a dict {name: module path}; "before" is the baseline, every other name ("after",
"canary") is compared against it.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadInput, VmError
from ..plumbing import hostpkg, proc
from ..plumbing.files import check_own_dir
from . import initramfs, machine, share
from .kernel import GuestKernel, check_module_matches

MODES = ("smcr", "clcv1", "tcp")
BASELINE = "before"
GUEST_FILES = ("guest_bench.py", "smcbench.c")
STATS_SCHEMA = "smcpatch-bench/1"


@dataclass(frozen=True)
class BenchConfig:
    """How much to measure.

    Every mode x variant gets `runs` pyperf runs; the variants alternate run by run in one boot
    (rmmod -> insmod -> re-add UEID before each). A run is `warmups` + `values_per_run` values;
    each value is the mean latency of `connections_per_run // values_per_run` connections.
    """

    modes: tuple[str, ...] = MODES
    connections_per_run: int = 300
    runs: int = 20
    warmups: int = 1
    values_per_run: int = 10
    threshold: float = 0.05
    timeout_s: int = 900
    validate: bool = True
    validate_connections: int = 20
    base_port: int = 20100  # below the ephemeral range: a client port must never take it
    memory_mb: int = 2048
    smp: int = 1  # one vCPU: cross-vCPU wake-ups under TCG cost milliseconds and add noise
    # QEMU -icount: guest time from the instruction count, not the host clock (None: host clock)
    icount: str | None = "shift=0,sleep=off"
    bootstrap: int = 2000
    seed: int = 1

    @property
    def loops(self) -> int:
        return max(1, self.connections_per_run // self.values_per_run)

    def check(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise BadInput(f"unknown benchmark mode(s) {bad}; choose from {', '.join(MODES)}")
        if self.runs < 2 or self.values_per_run < 1 or self.connections_per_run < 1:
            raise BadInput("need runs >= 2, values_per_run >= 1, connections_per_run >= 1")
        if not 0 < self.threshold < 1:
            raise BadInput(f"threshold {self.threshold} must be a fraction, e.g. 0.05")


@dataclass
class ModeStats:
    mode: str
    variant: str  # the candidate compared against "before"
    before_median_s: float
    after_median_s: float
    ratio: float  # candidate median / before median
    ci_low: float
    ci_high: float
    n_before: int
    n_after: int
    significant: bool  # the 95% CI excludes 1

    @property
    def ci_width(self) -> float:
        return self.ci_high - self.ci_low


@dataclass
class BenchResult:
    results_dir: Path
    release: str
    variants: list[str]
    modes: list[str]
    values: dict[str, dict[str, list[list[float]]]]  # mode -> variant -> runs -> values (s)
    stats: list[ModeStats]
    validation: dict[str, object] = field(default_factory=dict)
    boot_s: float | None = None
    wall_s: float = 0.0
    timings: dict[str, object] = field(default_factory=dict)
    compare_text: str = ""
    clock: str = "host clock"
    plot: Path | None = None
    summary: Path | None = None

    def stat(self, mode: str, variant: str | None = None) -> ModeStats:
        for s in self.stats:
            if s.mode == mode and (variant is None or s.variant == variant):
                return s
        raise KeyError(mode)


# ---------------------------------------------------------------------------------------------
# statistics (pure; unit-tested)


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of no values")
    return float(statistics.median(xs))


def bootstrap_ratio_ci(before: Sequence[Sequence[float]], after: Sequence[Sequence[float]], *,
                       iterations: int = 2000, confidence: float = 0.95,
                       seed: int = 1) -> tuple[float, float, float]:
    """Ratio of medians after/before with a two-level (runs, then values) bootstrap CI.

    Values inside one run share a module load, so the runs are resampled first and the values
    inside each drawn run second; this keeps run-to-run variation in the interval.
    Returns (ratio, low, high).
    """
    b_runs = [list(r) for r in before if len(r)]
    a_runs = [list(r) for r in after if len(r)]
    if not b_runs or not a_runs:
        raise ValueError("bootstrap needs values on both sides")
    ratio = median([v for r in a_runs for v in r]) / median([v for r in b_runs for v in r])
    rng = random.Random(seed)

    def resample(runs: list[list[float]]) -> float:
        pool: list[float] = []
        for _ in range(len(runs)):
            r = runs[rng.randrange(len(runs))]
            pool.extend(r[rng.randrange(len(r))] for _ in range(len(r)))
        return float(statistics.median(pool))

    ratios = sorted(resample(a_runs) / resample(b_runs) for _ in range(iterations))
    alpha = (1 - confidence) / 2
    lo = ratios[max(0, math.floor(alpha * iterations))]
    hi = ratios[min(iterations - 1, math.ceil((1 - alpha) * iterations) - 1)]
    return ratio, lo, hi


def mode_stats(mode: str, variant: str, before: Sequence[Sequence[float]],
               after: Sequence[Sequence[float]], *, iterations: int = 2000,
               seed: int = 1) -> ModeStats:
    ratio, lo, hi = bootstrap_ratio_ci(before, after, iterations=iterations, seed=seed)
    flat_b = [v for r in before for v in r]
    flat_a = [v for r in after for v in r]
    return ModeStats(
        mode=mode, variant=variant, before_median_s=median(flat_b), after_median_s=median(flat_a),
        ratio=ratio, ci_low=lo, ci_high=hi, n_before=len(flat_b), n_after=len(flat_a),
        significant=lo > 1.0 or hi < 1.0,
    )


def gate(result: BenchResult, threshold: float) -> tuple[bool, list[str]]:
    """`--check`: fail when a candidate is slower than before by more than `threshold` in any mode
    with statistical significance (its median ratio exceeds 1 + threshold and the whole 95% CI of
    the ratio lies above 1). Returns (passed, one line per mode)."""
    ok = True
    lines = []
    for s in result.stats:
        regress = s.ratio > 1 + threshold and s.ci_low > 1.0
        ok &= not regress
        verdict = "REGRESSION" if regress else "ok"
        lines.append(
            f"{s.mode:6s} {s.variant}/before = {s.ratio:.3f} "
            f"[95% CI {s.ci_low:.3f}, {s.ci_high:.3f}] "
            f"(threshold +{threshold:.0%}{', significant' if s.significant else ''}): {verdict}"
        )
    return ok, lines


# ---------------------------------------------------------------------------------------------
# pyperf JSON


def load_pyperf_runs(path: Path) -> list[list[float]]:
    """Values (seconds per connection) of each run of a single-benchmark pyperf JSON file."""
    import pyperf  # type: ignore[import-untyped]

    try:
        bench = pyperf.Benchmark.load(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VmError(f"cannot read pyperf results {path}: {e}") from e
    return [list(r.values) for r in bench.get_runs() if r.values]


def pyperf_compare(results_dir: Path, variant: str) -> str:
    base, cand = results_dir / f"{BASELINE}.json", results_dir / f"{variant}.json"
    done = proc.run([sys.executable, "-m", "pyperf", "compare_to", str(base), str(cand),
                     "--table", "--min-speed", "1"], capture_output=True, text=True, timeout=120,
                    what="pyperf compare_to", error=VmError)
    return str(done.stdout + done.stderr).strip()


# ---------------------------------------------------------------------------------------------
# report: plot and summary


def plot(result: BenchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = result.modes
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 4.2), squeeze=False)
    colours = {"before": "#4c72b0", "after": "#55a868", "canary": "#c44e52"}
    for ax, mode in zip(axes[0], modes, strict=True):
        data = [[v * 1e6 for r in result.values[mode][var] for v in r] for var in result.variants]
        parts = ax.violinplot(data, showmedians=True)
        for body, var in zip(parts["bodies"], result.variants, strict=True):
            body.set_facecolor(colours.get(var, "#8172b2"))
            body.set_alpha(0.55)
        rng = random.Random(0)
        for i, d in enumerate(data, start=1):
            ax.scatter([i + rng.uniform(-0.08, 0.08) for _ in d], d, s=5, color="black",
                       alpha=0.4)
        ax.set_xticks(range(1, len(result.variants) + 1), result.variants)
        ax.set_ylabel("µs per connection" + (" (icount clock)" if "icount" in result.clock
                                              else ""))
        title = mode
        for s in result.stats:
            if s.mode == mode:
                title += f"\n{s.variant}/before {s.ratio:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]"
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    clock = "instruction-count clock" if "icount" in result.clock else "host clock"
    fig.suptitle(f"SMC handshake latency, {result.release} (QEMU TCG, {clock})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_markdown(result: BenchResult, threshold: float) -> str:
    passed, lines = gate(result, threshold)
    out = [
        f"# SMC handshake latency: {', '.join(result.variants)}",
        "",
        f"Kernel `{result.release}` in QEMU; modes {', '.join(result.modes)}; variants "
        f"interleaved in one boot. Boot to guest script: "
        f"{result.boot_s:.1f} s; total {result.wall_s:.0f} s." if result.boot_s
        else f"Kernel `{result.release}`; total {result.wall_s:.0f} s.",
        "",
        "| mode | variant | before median (µs) | variant median (µs) | ratio | 95% CI | n |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for s in result.stats:
        out.append(
            f"| {s.mode} | {s.variant} | {s.before_median_s * 1e6:.1f} | "
            f"{s.after_median_s * 1e6:.1f} | {s.ratio:.3f} | [{s.ci_low:.3f}, {s.ci_high:.3f}] | "
            f"{s.n_before}/{s.n_after} |"
        )
    out += ["", f"Gate (threshold {threshold:.0%}): **{'pass' if passed else 'FAIL'}**", ""]
    out += [f"- {line}" for line in lines]
    if result.validation:
        out += ["", "## Validation pass (kprobe on smc_clc_prfx_match)", ""]
        out += ["| variant | mode | connections | calls | median duration (ns) |",
                "|---|---|---:|---:|---:|"]
        for var, modes in result.validation.items():
            for mode, v in modes.items():  # type: ignore[attr-defined]
                d = v.get("durations_ns") or []
                med = f"{statistics.median(d):.0f}" if d else "-"
                out.append(f"| {var} | {mode} | {v['connections']} | {v['calls']} | {med} |")
    out += [
        "", "## What is timed", "",
        "Per connection, the handshake: for smcr and tcp the connect() call (an AF_SMC connect "
        "returns after the whole SMC-R CLC handshake and link confirmation), for clcv1 the CLC "
        "exchange from the client's v1 proposal to the server's decline (the server's v1 CLC "
        "processing, where smc_clc_prfx_match runs). Each value is the mean over "
        "connections_per_run / values_per_run connections. Clock: " + result.clock + ".",
    ]
    out += ["", "Every timed run was proven from the kernel's SMC statistics (smcr: SMC-R "
            "successes == connections, no fallback; clcv1: server fallbacks with decline "
            "NOSMCDEV == connections; tcp: no SMC activity).", ""]
    if result.compare_text:
        out += ["## pyperf compare_to", "", "```", result.compare_text, "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# orchestration


RESULTS_MARKER = ".smcpatch-results"


def claim_results(path: Path) -> Path:
    """The results directory: new, empty or an earlier run's (its marker); never a user's."""
    check_own_dir(path, "--results", RESULTS_MARKER)
    path.mkdir(parents=True, exist_ok=True)
    (path / RESULTS_MARKER).touch()
    return path


def run_bench(kernel: GuestKernel, modules: Mapping[str, Path], config: BenchConfig,
              results_dir: Path, *, cache_dir: Path | None = None,
              progress: Callable[[str], None] | None = None) -> BenchResult:
    """Boot `kernel` once and measure every mode with every module variant, interleaved.

    modules: {"before": smc.ko[.xz], "after": ...} (or "canary"); all for kernel.release.
    Raises VmError (guest failure, unexpected fallback, ...) or BadInput (mismatched module).
    """
    _check_inputs(kernel, modules, config)
    hostpkg.ensure(share.host_tools(), "guest tools")
    results_dir = claim_results(Path(results_dir)).resolve()
    cache_dir = Path(cache_dir) if cache_dir else results_dir.parent / ".bench-cache"
    started = time.monotonic()
    script = _stage(kernel, modules, config, results_dir, cache_dir)
    (progress or (lambda _msg: None))(
        f"booting {kernel.release} under QEMU ({len(modules)} variants, modes "
        f"{', '.join(config.modes)})")
    run = machine.run_script(kernel, initramfs.share_initramfs(kernel, cache_dir), results_dir,
                             script, timeout_s=config.timeout_s, memory_mb=config.memory_mb,
                             smp=config.smp, icount=config.icount)
    guest = _guest_result(results_dir, run)
    result = _statistics(kernel, list(modules), config, results_dir, guest, run)
    result.wall_s = time.monotonic() - started
    _write_results(result, config, results_dir)
    return result


def _check_inputs(kernel: GuestKernel, modules: Mapping[str, Path], config: BenchConfig) -> None:
    config.check()
    if BASELINE not in modules or len(modules) < 2:
        raise BadInput(
            f"need a '{BASELINE}' module and at least one candidate, got {list(modules)}")
    for name, ko in modules.items():
        if not name.isidentifier():
            raise BadInput(f"bad variant name {name!r}")
        check_module_matches(kernel, Path(ko))


def _stage(kernel: GuestKernel, modules: Mapping[str, Path], config: BenchConfig,
           results_dir: Path, cache_dir: Path) -> str:
    """The results share made ready for the guest: what it runs, with what; the script."""
    for old in results_dir.glob("*.json"):  # an earlier run's, in a directory of ours
        old.unlink()
    config_path = share.stage(results_dir, GUEST_FILES, share.build_helper(cache_dir), modules, {
        "release": kernel.release, "modules_root": str(kernel.modules_root),
        "modes": list(config.modes), "runs": config.runs, "warmups": config.warmups,
        "values_per_run": config.values_per_run, "loops": config.loops,
        "validate": config.validate, "validate_connections": config.validate_connections,
        "base_port": config.base_port,
    })
    return share.guest_script("guest_bench.py", config_path)


def _guest_result(results_dir: Path, run: machine.GuestRun) -> dict[str, Any]:
    path = results_dir / "guest-result.json"
    if not path.is_file():
        raise VmError(f"the guest script wrote no result (exit {run.returncode}). Console tail:\n"
                      f"{run.console_tail()}")
    guest: dict[str, Any] = json.loads(path.read_text())
    if not guest.get("ok"):
        raise VmError(f"guest benchmark failed: {guest.get('error')}\n"
                      f"Console tail:\n{run.console_tail(15)}")
    return guest


def _statistics(kernel: GuestKernel, variants: list[str], config: BenchConfig,
                results_dir: Path, guest: dict[str, Any], run: machine.GuestRun) -> BenchResult:
    """The guest's pyperf runs read back, each candidate against before, mode by mode."""
    values = {mode: {v: load_pyperf_runs(results_dir / f"{mode}-{v}.json") for v in variants}
              for mode in config.modes}
    stats = [mode_stats(mode, v, values[mode][BASELINE], values[mode][v],
                        iterations=config.bootstrap, seed=config.seed)
             for v in variants if v != BASELINE for mode in config.modes]
    result = BenchResult(
        results_dir=results_dir, release=kernel.release, variants=variants,
        modes=list(config.modes), values=values, stats=stats,
        validation=guest.get("validation", {}), boot_s=run.boot_s, wall_s=0.0,
        timings={**guest.get("timings", {}), "qemu_wall_s": run.wall_s,
                 "guest_uptime_at_script_s": _script_start(run.console),
                 "guest_total_s": guest.get("guest_total_s")},
    )
    if config.icount and machine.qemu_accel() == "tcg":
        result.clock = (f"QEMU -icount {config.icount}: guest time counts executed "
                        "instructions (shift=0: 1 ns each) and skips idle time, so it is "
                        "reproducible but not wall time")
    return result


def _write_results(result: BenchResult, config: BenchConfig, results_dir: Path) -> None:
    """compare_to.txt, latency.png, summary.md and stats.json beside the pyperf files."""
    result.compare_text = "\n\n".join(pyperf_compare(results_dir, v) for v in result.variants
                                      if v != BASELINE)
    (results_dir / "compare_to.txt").write_text(result.compare_text + "\n")
    result.plot = plot(result, results_dir / "latency.png")
    result.summary = results_dir / "summary.md"
    result.summary.write_text(summary_markdown(result, config.threshold))
    (results_dir / "stats.json").write_text(json.dumps(stats_document(result, config),
                                                       indent=1))


def stats_document(result: BenchResult, config: BenchConfig) -> dict[str, object]:
    """stats.json (schema smcpatch-bench/1): the configuration, the clock, the timings and the
    after/before statistics of every mode."""
    return {"schema": STATS_SCHEMA, "tool_version": __version__, "release": result.release,
            "config": asdict(config), "clock": result.clock, "variants": result.variants,
            "boot_s": result.boot_s, "wall_s": result.wall_s, "timings": result.timings,
            "stats": [asdict(s) for s in result.stats]}


def _script_start(console: Path) -> float | None:
    """Guest uptime when the benchmark script started (kernel boot + initramfs + 9p mounts)."""
    try:
        for line in console.read_text(errors="replace").splitlines():
            if line.startswith("SMCB-SCRIPT-START "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None
