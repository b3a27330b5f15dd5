"""smcpatch's command line: the tasks behind both `smcpatch <task>` (the console script) and
`inv <task>` (tasks.py in a checkout). `smcpatch --list`, `smcpatch <task> --help`.

A thin layer: parse options, call the library, print, choose the exit code. Errors are raised deep
as smcpatch.errors.SmcpatchError and reported here once, as one line.
"""

from __future__ import annotations

import dataclasses
import json as json_module
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.program import Program
from invoke.tasks import task
from rich.console import Console
from rich.markup import escape

from . import __version__
from .commands import inspect as inspect_cmd
from .commands import kernels as kernels_cmd
from .commands import report as report_cmd
from .data import DEFAULT_MATRIX, DEFAULT_PATCHES
from .errors import BadInput, SmcpatchError
from .outputs import terminal as render
from .plumbing.cache import Cache

# A wide page when piped (CI logs): the result table should not be squeezed to 80 columns.
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 220)
errors = Console(stderr=True, highlight=False)

SUITE_HELP = ("the suite to take a kernel from when several have it (default: the host's "
              "release first), e.g. bookworm-backports, trixie, bullseye-security")
VEX_HELP = ("write an OpenVEX 0.2.0 document here: one statement per product (Debian's "
            "image by purl with its smc.ko; verify's rebuilt after-modules)")
JUNIT_HELP = "write JUnit XML here (one test case per target and check) for CI systems"
ARCH_HELP = "amd64 | arm64 | s390x | all (default: amd64, or the arch --flavour names)"
FLAVOUR_HELP = ("the arch's plain flavour (default), cloud, rt, a full name (cloud-arm64) or all; "
                "amd64 has amd64, cloud-amd64, rt-amd64; arm64 has arm64, cloud-arm64, "
                "rt-arm64; s390x has s390x")
MATRIX_HELP = f"your own kernel matrix (kernels.toml format; default: {DEFAULT_MATRIX})"
PATCHES_HELP = f"your own patch series directory (default: {DEFAULT_PATCHES})"


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn any failure into one line on stderr and a non-zero exit; never a traceback."""
    try:
        yield
    except SmcpatchError as exc:
        errors.print(f"[red]error:[/] {escape(exc.one_line())}", markup=True, soft_wrap=True)
        raise Exit(code=exc.exit_code) from None
    except KeyboardInterrupt:
        errors.print("[red]interrupted[/]: nothing half-written was kept; rerun to resume")
        raise Exit(code=130) from None
    except Exit:
        raise
    except Exception as exc:  # a bug: still one line, with a way to see the traceback
        if os.environ.get("SMCPATCH_DEBUG"):
            raise
        errors.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                     "(rerun with SMCPATCH_DEBUG=1 for the traceback)", soft_wrap=True)
        raise Exit(code=3) from None


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _required(value: str | None, option: str) -> str:
    """Required options are options, not positionals: `smcpatch inspect --help` must show help,
    not take `--help` for the module's path."""
    if not value:
        raise BadInput(f"{option} is required")
    return value


def _required_path(value: str | None, option: str) -> Path:
    return Path(_required(value, option)).expanduser()


@task(iterable=["arch"],
      help={"flavour": FLAVOUR_HELP, "arch": ARCH_HELP + "; repeatable", "matrix": MATRIX_HELP,
            "archive": "every kernel of every suite the host's mirrors serve, with its state "
                       "from the cache (vulnerable / fixed once verified)",
            "cache": "cache directory (default $SMCPATCH_CACHE or ~/.cache/smcpatch)"})
def kernels(c: Context, flavour: str = "", arch: list[str] | None = None,
            matrix: str | None = None, archive: bool = False, cache: str | None = None) -> None:
    """List the kernel matrix (kernels.toml), or with --archive every kernel Debian's archive
    serves here: version, suite, kernel release, state."""
    with reported_errors():
        if archive:
            rows = kernels_cmd.archive_listing(Cache.open(_path(cache)), flavour, arch or None)
            console.print(render.archive_table(rows))
            return
        path, targets = kernels_cmd.listing(flavour, _path(matrix), arch or None)
        console.print(render.kernels_table(f"kernel matrix ({path})", targets))


@task(
    iterable=["kernel", "fix", "arch"],
    help={
        "kernel": "upstream version (6.1.176), Debian version (6.12.95-1~bpo12+1) or "
                  "kernel release (6.12.95+deb12-amd64); repeatable; default: the matrix",
        "arch": ARCH_HELP + "; repeatable; a foreign arch is cross-built with Debian's cross gcc",
        "flavour": FLAVOUR_HELP,
        "json": "write the JSON report (schema smcpatch-report/1) to this path",
        "parallel": "targets verified at once (default: the number of cores)",
        "cache": "cache directory (default $SMCPATCH_CACHE or ~/.cache/smcpatch)",
        "fix": "default (the series' default set), all, or a fix id from patches/series "
               "(repeatable)",
        "source": "your own kernel tree (or a dir holding net/smc); needs --kdir",
        "kdir": "your prepared kernel build/headers directory (make -C KDIR M=...)",
        "jobs": "make -j (default: number of cores)",
        "sign_key": "sign each fixed after-module with this private key (PEM), using the "
                    "kernel's own scripts/sign-file; needs --sign-cert",
        "sign_cert": "the X.509 certificate of --sign-key (PEM or DER)",
        "matrix": MATRIX_HELP,
        "patches": PATCHES_HELP,
        "suite": SUITE_HELP,
        "load": "also boot each kernel (its own arch, QEMU TCG) and insmod the after-module: "
                "/proc/modules, no vermagic or CRC complaint",
        "vex": VEX_HELP,
        "junit": JUNIT_HELP,
    },
)
def verify(c: Context, kernel: list[str] | None = None, flavour: str = "",
           arch: list[str] | None = None, json: str | None = None, cache: str | None = None,
           fix: list[str] | None = None,
           source: str | None = None, kdir: str | None = None, jobs: int = 0,
           parallel: int = 0, sign_key: str | None = None, sign_cert: str | None = None,
           matrix: str | None = None, patches: str | None = None,
           suite: str | None = None, load: bool = False, vex: str | None = None,
           junit: str | None = None) -> None:
    """Fetch, classify, patch, build and inspect smc.ko before and after the fix.

    Exit 0 when every target ends with a verified fixed module, 1 when any does not, 2 on bad input.
    """
    from .commands import verify as verify_cmd  # each task imports only what it runs

    with reported_errors():
        request = verify_cmd.VerifyRequest(kernels=kernel or [], flavour=flavour,
                                       arches=arch or None,
                                       cache_dir=_path(cache), json_path=_path(json),
                                       fixes=fix or None, source=_path(source), kdir=_path(kdir),
                                       jobs=jobs or None, parallel=parallel or None,
                                       sign_key=_path(sign_key), sign_cert=_path(sign_cert),
                                       matrix=_path(matrix), patches=_path(patches),
                                       suite=suite, load=load, vex_path=_path(vex),
                                       junit_path=_path(junit))
        with render.progress_display(console) as display:
            result = verify_cmd.run(request, display)
        reports, code = result.reports, result.exit_code
        render.print_summary(reports, console)
        if json:
            console.print(f"JSON report: {json}")
        failed = [f"{r.package_version} {r.flavour}: {r.error}" for r in reports if r.error]
        if failed:  # a target that could not be verified: one line on stderr for build farms
            errors.print(f"[red]error:[/] {escape('; '.join(failed))}", soft_wrap=True)
    if code:
        raise Exit(code=code)


@task(iterable=["arch"], help={
    "format": "github (a GitHub Actions strategy.matrix, JSON) | json | text",
    "flavour": FLAVOUR_HELP,
    "arch": ARCH_HELP + "; repeatable",
    "matrix": MATRIX_HELP,
})
def matrix(c: Context, format: str = "text", flavour: str = "",
           arch: list[str] | None = None, matrix: str | None = None) -> None:
    """Print the default matrix as CI jobs, one per target (`inv verify --kernel K --flavour F`).

    With --format github, feed it to `strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`;
    each job writes its --json report and `inv report --merge DIR` joins them.
    """
    with reported_errors():
        print(kernels_cmd.matrix_text(format, flavour, _path(matrix), arch or None))


@task(help={
    "merge": "directory holding the JSON reports of several runs (e.g. one per CI job)",
    "json": "also write the merged report here",
})
def report(c: Context, merge: str | None = None, json: str | None = None) -> None:
    """Merge JSON reports into one table (and one JSON report); exit 1 if any target failed."""
    with reported_errors():
        reports, code = report_cmd.merge(_required_path(merge, "--merge DIR"), _path(json))
        render.print_summary(reports, console)
    if code:
        raise Exit(code=code)


@task(help={
    "module": "smc.ko, smc.ko.xz/.zst/.gz (also Debian's stripped modules) or smc_clc.o",
    "json": "print the result as JSON instead of text",
    "release": "also check vermagic against this kernel release, e.g. 6.1.0-50-amd64",
    "symvers": "also check modversions CRCs against this Module.symvers",
})
def inspect(c: Context, module: str | None = None, json: bool = False,
            release: str | None = None, symvers: str | None = None) -> None:
    """Inspect any SMC module and print the verdict with its evidence.

    Exit 0 = fixed, 1 = vulnerable, 2 = unknown or bad input.
    """
    with reported_errors():
        data, code = inspect_cmd.run(_required_path(module, "--module PATH"), release,
                                     _path(symvers))
        if json:
            print(dump_json(data))
        else:
            render.print_inspect(data, console)
    if code:
        raise Exit(code=code)


@task(
    iterable=["fix"],
    auto_shortflags=False,
    help={
        "kernel": "upstream version, e.g. 6.1.176 (kernels.toml or the archive)",
        "out": "directory for the DKMS source package (new, empty, or an earlier package)",
        "flavour": "the headers --check builds against (the package serves every flavour)",
        "arch": ARCH_HELP + " (one; the package itself serves every arch)",
        "cache": "cache directory (default $SMCPATCH_CACHE or ~/.cache/smcpatch)",
        "fix": "default, all, or a fix id from patches/series (repeatable)",
        "check": "also `dkms build` it with Debian's dkms against the extracted headers "
                 "(private dkms trees, nothing installed) and inspect the smc.ko it makes",
        "sign_key": "with --check: dkms signs the module with this key (PEM) and the kernel's "
                    "sign-file; needs --sign-cert",
        "sign_cert": "the X.509 certificate of --sign-key (PEM or DER)",
        "json": "print the summary as JSON",
        "jobs": "make -j for --check (default: number of cores)",
        "matrix": MATRIX_HELP,
        "patches": PATCHES_HELP,
        "suite": SUITE_HELP,
    },
)
def dkms(c: Context, kernel: str | None = None, out: str | None = None, flavour: str = "",
         arch: str = "", cache: str | None = None,
         fix: list[str] | None = None, check: bool = False, sign_key: str | None = None,
         sign_cert: str | None = None, json: bool = False, jobs: int = 0,
         matrix: str | None = None, patches: str | None = None,
         suite: str | None = None) -> None:
    """Write a DKMS source package of the fixed SMC module for one kernel (`dkms add OUT`).

    Exit 0 when written (with --check: dkms built a module inspected fixed), 1 when the checked
    module is not fixed, 2 on bad input.
    """
    from .commands import dkms as dkms_cmd

    with reported_errors():
        summary = dkms_cmd.run(Cache.open(_path(cache)), _required(kernel, "--kernel"),
                               _required_path(out, "--out DIR"),
                               flavour, fix or None, check=check, jobs=jobs or None,
                               sign_key=_path(sign_key), sign_cert=_path(sign_cert),
                               patches_dir=_path(patches), matrix_path=_path(matrix),
                               suite=suite, arch=arch)
        if json:
            print(dump_json(summary))
        else:
            render.print_dkms(summary, console)
    if summary["check"] and summary["check"]["verdict"] != "fixed":
        raise Exit(code=1)


@task(help={
    "kernel": "upstream version whose Debian image boots in the guest (default 6.12.107)",
    "variant": "after (our fix, default) | canary (fix + bench/canary-prfx-match-delay.patch)",
    "check": "exit 1 when the variant is slower than before beyond --threshold, significantly",
    "threshold": "regression threshold, a fraction (default 0.05)",
    "runs": "pyperf runs per mode and variant; each is one module load, interleaved (default 20)",
    "connections": "connections per run (default 300)",
    "modes": "comma-separated subset of smcr,clcv1,tcp",
    "results": "results directory (default results/bench-<kernel>-<variant>)",
    "cache": "cache directory (default $SMCPATCH_CACHE or ~/.cache/smcpatch)",
    "host_clock": "time with the host clock instead of QEMU's instruction-count clock (noisy)",
    "timeout": "guest timeout in seconds (default 900)",
    "matrix": MATRIX_HELP,
    "suite": SUITE_HELP,
    "junit": "write JUnit XML here: one test case per mode and candidate (fails on a "
             "significant regression beyond --threshold)",
})
def bench(c: Context, kernel: str = "6.12.107", variant: str = "after", check: bool = False,
          threshold: float = 0.05, runs: int = 20, connections: int = 300,
          modes: str = "smcr,clcv1,tcp", results: str | None = None, cache: str | None = None,
          host_clock: bool = False, timeout: int = 900, matrix: str | None = None,
          suite: str | None = None, junit: str | None = None) -> None:
    """SMC handshake latency before vs after the fix: the real Debian kernel in QEMU, Soft-RoCE,
    pyperf; every run proven from the kernel's SMC counters.

    Results (pyperf JSON per mode and variant, compare_to.txt, latency.png, summary.md) go to one
    directory, printed at the end. With --check: exit 1 on a significant regression.
    """
    from .commands import bench as bench_cmd
    from .guest.bench import BenchConfig

    with reported_errors():
        config = BenchConfig(
            modes=tuple(m.strip() for m in modes.split(",") if m.strip()), runs=runs,
            connections_per_run=connections, threshold=threshold, timeout_s=timeout)
        if host_clock:
            config = dataclasses.replace(config, icount=None)
        outcome = bench_cmd.run(kernel, variant, config, _path(results), _path(cache),
                                _path(matrix), progress=console.print, suite=suite)
        for line in outcome.gate_lines:
            console.print(line)
        result = outcome.result
        if junit:
            from .outputs import junit as junit_xml

            junit_xml.write(Path(junit).expanduser(), junit_xml.bench_suite(result, threshold))
        console.print(f"boot to guest script {result.boot_s or 0:.1f} s, "
                      f"total {result.wall_s:.0f} s")
        console.print(f"results: {result.results_dir} "
                      "(summary.md, latency.png, compare_to.txt, pyperf *.json)")
    if outcome.exit_code(check):
        raise Exit(code=outcome.exit_code(check))


def dump_json(data: Any) -> str:
    return json_module.dumps(data, indent=2)


@task(
    iterable=["suite", "arch"],
    help={
        "suite": "a suite to scan (repeatable; default: the host's release and its -security)",
        "arch": ARCH_HELP + "; repeatable",
        "flavour": FLAVOUR_HELP.replace("plain flavour (default)", "plain flavour") +
                   " (default: all)",
        "json": "write every image's result here (schema smcpatch-scan/1)",
        "vex": VEX_HELP.replace("verify's rebuilt after-modules", "its module's SHA256"),
        "junit": "write JUnit XML here (one test case per image: vulnerable fails)",
        "parallel": "downloads at once (default 4)",
        "cache": "cache directory (default $SMCPATCH_CACHE or ~/.cache/smcpatch)",
    },
)
def scan(c: Context, suite: list[str] | None = None, arch: list[str] | None = None,
         flavour: str = "all", json: str | None = None, vex: str | None = None,
         junit: str | None = None, parallel: int = 4, cache: str | None = None) -> None:
    """Judge every published Debian kernel image from its own smc.ko (only the image debs are
    downloaded; results cached by package SHA256), beside what Debian's changelog says.

    Exit 0 when every image was judged and no changelog contradicts its binary, 1 otherwise,
    2 on bad input. Vulnerable images are findings, not failures (the JUnit file fails them).
    """
    from .commands import scan as scan_cmd

    with reported_errors():
        request = scan_cmd.ScanRequest(suites=suite or [], arches=arch or [], flavour=flavour,
                                       cache_dir=_path(cache), json_path=_path(json),
                                       vex_path=_path(vex), junit_path=_path(junit),
                                       parallel=max(1, parallel))
        with render.progress_display(console) as display:
            result = scan_cmd.run(request, display)
        console.print(render.scan_table(result.rows, result.suites))
        counts = {v: sum(1 for r in result.rows if r.verdict == v and not r.error)
                  for v in ("vulnerable", "fixed", "not_affected", "unknown")}
        console.print(f"{len(result.rows)} images in {result.seconds:.1f} s: "
                      + ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items() if n)
                      + f"; downloaded {result.downloaded_bytes / 1e6:.0f} MB "
                      f"({sum(1 for r in result.rows if r.from_cache)} from the cache)")
        for path, what in ((json, "JSON"), (vex, "OpenVEX"), (junit, "JUnit")):
            if path:
                console.print(f"{what}: {path}")
        errors_ = [f"{r.package} {r.version}: {r.error}" for r in result.rows if r.error]
        if errors_:
            errors.print(f"[red]error:[/] {escape('; '.join(errors_))}", soft_wrap=True)
    if result.exit_code:
        raise Exit(code=result.exit_code)


@task(help={
    "kernel": "the Debian kernel to boot (default 6.12.107, a vulnerable one)",
    "attempts": "churn cycles per variant: the device deleted and recreated (default: as many "
                "as --seconds allows)",
    "seconds": "churn time per variant (default 60)",
    "widen": "use instrumented builds of both variants: a 20 ms busy-wait at the same point "
             "(between taking the dst and reading its device); said in the report",
    "json": "write the result here (schema smcpatch-race/1)",
    "cache": "cache directory (default $SMCPATCH_CACHE or ~/.cache/smcpatch)",
    "matrix": MATRIX_HELP,
    "suite": SUITE_HELP,
})
def race(c: Context, kernel: str = "6.12.107", attempts: int = 0, seconds: float = 60.0,
         widen: bool = False, json: str | None = None, cache: str | None = None,
         matrix: str | None = None, suite: str | None = None) -> None:
    """The vulnerable and the fixed module in Debian's kernel under device churn (a veth pair
    deleted and recreated under clcv1 handshakes), with slab poisoning, KFENCE and the
    lockup/stall detectors on; splats come from the kernel, never from timing.

    Exit 0 when the fixed module survives every attempt with no splat, 1 when it does not;
    the vulnerable module's outcome is reported as it is.
    """
    from .commands import race as race_cmd

    with reported_errors():
        request = race_cmd.RaceRequest(kernel=kernel, attempts=attempts, seconds=seconds,
                                       widen=widen, json_path=_path(json),
                                       cache_dir=_path(cache), matrix=_path(matrix),
                                       suite=suite)
        with render.progress_display(console) as display:
            result = race_cmd.run(request, display.reporter("race"))
        render.print_race(result, console)
        if json:
            console.print(f"JSON: {json}")
    if result.exit_code:
        raise Exit(code=result.exit_code)


namespace = Collection(kernels, verify, matrix, report, inspect, dkms, bench, scan, race)


def main() -> None:
    """The `smcpatch` console script."""
    Program(namespace=namespace, version=__version__, name="smcpatch",
            binary="smcpatch").run()
