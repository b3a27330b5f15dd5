"""smcpatch's command line: the tasks behind both `smcpatch <task>` (the console script) and
`inv <task>` (tasks.py in a checkout). `smcpatch --help`, `smcpatch <task> -h`.

A thin layer: every option is read and checked in one pass before any work (a bad value is one
line and exit 2), the library is called, the result printed, the exit code chosen. Errors are
raised deep as smcpatch.errors.SmcpatchError and reported here once, as one line.
"""

from __future__ import annotations

import contextlib
import errno
import inspect as pyinspect
import json as json_module
import math
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task
from rich.console import Console

from . import __version__
from .errors import BadInput, SmcpatchError
from .installed.mitigation import PATH as HOST_MITIGATION
from .kernels.matrix import GUEST_KERNEL
from .kernels.request import KernelRequest
from .outputs import terminal as render
from .outputs.text import visible
from .plumbing import files, proc
from .plumbing.cache import Cache

if TYPE_CHECKING:
    from .outputs.vex import VexOutput


def _console_width() -> int | None:
    """A terminal's own width; piped output honours COLUMNS, else 80 (CI logs read it)."""
    if sys.stdout is None or sys.stdout.isatty():  # None: closed (`>&-`) before start-up
        return None
    with contextlib.suppress(ValueError):
        return max(40, int(os.environ.get("COLUMNS", "")))
    return 80


def _shown_whatever_the_encoding() -> None:
    """A character the terminal's encoding cannot show is written as its escape (\\xe9
    under PYTHONIOENCODING=ascii), never an exception after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


_shown_whatever_the_encoding()
console = Console(stderr=False, highlight=False, width=_console_width())
errors = Console(stderr=True, highlight=False, width=_console_width())
console.on_broken_pipe = lambda: _quiet_broken_pipe()  # type: ignore[method-assign]

CACHE_HELP = "cache directory (default: $SMCPATCH_CACHE or ~/.cache/smcpatch)"
SUITE_HELP = ("take the kernel from this suite when several have it, e.g. bookworm-backports, "
              "trixie, bullseye-security (default: the host's release first)")
VEX_HELP = ("write VEX here, one statement per product (Debian's image by purl with its smc.ko; "
            "verify's rebuilt after-modules): OpenVEX 0.2.0, or each --vex-format (several: "
            "PATH's .json becomes .openvex.json, .csaf.json, .cdx.json)")
VEX_FORMAT_HELP = ("openvex (default) | csaf (CSAF 2.0, VEX profile) | cyclonedx (CycloneDX 1.6 "
                   "VEX); repeatable")
VEX_PUBLISHER_HELP = "the publisher named in the VEX documents (default: smcpatch's own name)"
VEX_NAMESPACE_HELP = ("a URL the publisher controls, for CSAF's publisher namespace (default: "
                      "https://smcpatch.invalid, a reserved name)")
JUNIT_HELP = "write JUnit XML here (one test case per target and check) for CI systems"
ARCH_HELP = "amd64 | arm64 | s390x | all (default: amd64, or the arch --flavour names)"
FLAVOUR_HELP = ("the arch's plain flavour (default), cloud, rt, a full name (cloud-arm64) or "
                "all")
MATRIX_HELP = "your own kernel matrix in kernels.toml format (default: the package's)"
PATCHES_HELP = "your own patch series directory (default: the package's patches/)"
KERNEL_HELP = ("upstream version (6.1.176), Debian version (6.12.95-1~bpo12+1) or kernel "
               "release (6.12.95+deb12-amd64)")
# what a user's input file can be at most: read no more than that (a FIFO or /dev/zero is refused)
MATRIX_LIMIT, REPORT_LIMIT, KEY_LIMIT = 1 * files.MB, 64 * files.MB, 1 * files.MB


Terminated = proc.Terminated  # SIGTERM, handled like Ctrl-C


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn any failure into one line on stderr and a non-zero exit; never a traceback.

    Ctrl-C or SIGTERM kill every child process group at once (a build does not run on), the
    stages' temp dirs go as the exception unwinds; a closed stdout is a quiet exit."""
    proc.handle_signals()
    try:
        yield
    except SmcpatchError as exc:
        proc.kill_all()
        errors.print(render.fmt("[red]error:[/] {}", exc.one_line()), soft_wrap=True)
        raise Exit(code=exc.exit_code) from None
    except KeyboardInterrupt as exc:
        _stopped(exc)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except Exit:
        raise
    except OSError as exc:
        if exc.errno not in _WRITE_FAILED:
            _internal_error(exc)
        _write_failed(exc)
    except Exception as exc:  # a bug: still one line, with a way to see the traceback
        interrupt = proc.interrupt_behind(exc)
        if interrupt is not None:  # a signal, wrapped by Python (RuntimeError of __set_name__)
            _stopped(interrupt)
        _internal_error(exc)


def _internal_error(exc: Exception) -> NoReturn:
    proc.kill_all()
    if os.environ.get("SMCPATCH_DEBUG"):
        raise exc
    errors.print(render.fmt("[red]internal error:[/] {}: {} (rerun with SMCPATCH_DEBUG=1 "
                            "for the traceback)", type(exc).__name__, str(exc)), soft_wrap=True)
    raise Exit(code=3) from None


# a disk (or the terminal's file) that takes no more: the run cannot do what was asked, exit 2
_WRITE_FAILED = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _write_failed(exc: OSError) -> NoReturn:
    """No space left (stdout to /dev/full, a full disk under the cache): one line, exit 2;
    what stdout still holds is dropped so that nothing is written at exit."""
    proc.kill_all()
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    where = f" ({exc.filename})" if exc.filename else ""
    with contextlib.suppress(OSError):
        errors.print(render.fmt("[red]error:[/] cannot write{}: {}", where,
                                exc.strerror or str(exc)), soft_wrap=True)
    raise Exit(code=2) from None


def _stopped(exc: KeyboardInterrupt) -> NoReturn:
    """Ctrl-C or SIGTERM: every child group killed, one line, 130 or 143."""
    proc.ignore_signals()  # the run is stopping: a second signal must not cut its report
    killed = proc.kill_all(stopping=True)
    what = "terminated" if isinstance(exc, Terminated) else "interrupted"
    children = f"; {killed} running command(s) stopped" if killed else ""
    errors.print(f"[red]{what}[/]{children}: nothing half-written was kept; rerun to resume")
    raise Exit(code=proc.exit_code(exc)) from None


def _quiet_broken_pipe() -> NoReturn:
    """The reader of our output went away (`| head`): stop quietly, as coreutils do."""
    proc.kill_all()
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise Exit(code=128 + signal.SIGPIPE)


# -- the one validation pass: every option read before any work ----------------------------------
def _int(value: str | None, option: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(str(value), 10)
    except ValueError:
        raise BadInput(f"{option} {value!r}: not a whole number") from None
    if not low <= number <= high:
        raise BadInput(f"{option} {number}: must be between {low} and {high}")
    return number


def _float(value: str | None, option: str, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    try:
        number = float(str(value))
    except ValueError:
        raise BadInput(f"{option} {value!r}: not a number") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise BadInput(f"{option} {value}: must be a number between {low:g} and {high:g}")
    return number


def _choice(value: str, option: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadInput(f"{option} {value!r}: choose {', '.join(choices)}")
    return value


def _path(value: str | None, option: str = "a path") -> Path | None:
    return files.user_path(value, option) if value else None


def _input(value: str | None, option: str, what: str, limit: int) -> Path | None:
    """An input file: checked for its type and size now, read with that limit later."""
    if value is None:
        return None
    path = files.user_path(value, option)
    files.check_input(path, what, limit)
    return path


def _output(value: str | None, option: str) -> Path | None:
    """An output path: refused now if nothing can be written there, never after the work
    (`--json ""` is refused, not taken for no --json)."""
    if value is None:
        return None
    return files.check_output(files.user_path(value, option), option)


def _distinct(outputs: dict[str, Path | None], vex: VexOutput | None = None) -> None:
    """Every output of one run on its own file (before any work)."""
    pairs = [(option, path) for option, path in outputs.items() if path is not None]
    if vex is not None:
        many = len(vex.formats) > 1
        pairs += [(f"--vex ({fmt})" if many else "--vex", path)
                  for fmt, path in vex.paths().items()]
    files.check_distinct(pairs)


def _vex(path: str | None, formats: list[str] | None, publisher: str | None,
         namespace: str | None) -> VexOutput | None:
    """--vex and the options that shape it, all checked now (the files too)."""
    from .outputs import vex

    chosen = vex.check_formats(formats or [])
    who = vex.check_publisher(publisher, namespace)
    if path is None:
        if formats or publisher is not None or namespace is not None:
            raise BadInput("--vex-format, --vex-publisher and --vex-namespace go with --vex PATH")
        return None
    return vex.check_output(vex.VexOutput(files.user_path(path, "--vex"), chosen, who))


def _say_vex(output: VexOutput | None) -> None:
    from .outputs.vex import FORMATS

    for fmt, path in (output.paths() if output else {}).items():
        console.print(render.fmt("{}: {}", FORMATS[fmt], path))


def _required(value: str | None, option: str) -> str:
    """Required values are options, not positionals, so `-h` is always help."""
    if not value:
        raise BadInput(f"{option} is required")
    return value


def _kernel_request(kernel: list[str] | None, arch: list[str] | None, flavour: str,
                    suite: str | None, matrix: str | None, source: str | None = None,
                    kdir: str | None = None) -> KernelRequest:
    matrix_path = _input(matrix, "--matrix", "kernel matrix (kernels.toml)", MATRIX_LIMIT)
    request = KernelRequest(kernels=tuple(kernel or ()), arches=tuple(arch or ()),
                            flavour=flavour, suite=suite or None, matrix=matrix_path,
                            source=_path(source), kdir=_path(kdir))
    request.check()
    return request


def _say_why(code: int, why: list[str]) -> None:
    """A red exit says why, naming the kernels that caused it (one line on stderr)."""
    if code and why:
        errors.print(render.fmt(f"[red]exit {code}:[/] {{}}", "; ".join(why)), soft_wrap=True)


def _fail(code: int) -> None:
    if code:
        raise Exit(code=code)


def dump_json(data: Any) -> str:
    return json_module.dumps(data, indent=2, allow_nan=False)  # NaN is not JSON


# -- the tasks ------------------------------------------------------------------------------------
@task(iterable=["arch"], auto_shortflags=False,
      help={"flavour": FLAVOUR_HELP, "arch": ARCH_HELP + "; repeatable", "matrix": MATRIX_HELP,
            "archive": "every kernel of every suite the host's mirrors serve, with its state "
                       "from the cache (vulnerable / fixed once verified or scanned)",
            "cache": CACHE_HELP})
def kernels(c: Context, flavour: str = "", arch: list[str] | None = None,
            matrix: str | None = None, archive: bool = False, cache: str | None = None) -> None:
    """List the kernels smcpatch knows: the matrix, or the archive's.

    Default: the matrix (kernels.toml). --archive: every kernel Debian's archive serves here,
    its version, suite, release and state. Exit 0; 2 on bad input.
    """
    from .commands import kernels as kernels_cmd  # each task imports only what it runs

    with reported_errors():
        request = _kernel_request(None, arch, flavour, None, matrix)
        if archive:
            with render.progress_display(console) as display:
                rows = kernels_cmd.archive_listing(Cache.open(_path(cache)), flavour,
                                                   list(request.arches) or None,
                                                   display.reporter("kernels"))
            render.print_archive(rows, console)
            return
        path, targets = kernels_cmd.listing(flavour, request.matrix, list(request.arches) or None)
        render.print_kernels(f"kernel matrix ({path})", targets, console)


@task(
    iterable=["kernel", "fix", "arch", "vex_format"], auto_shortflags=False,
    help={
        "kernel": KERNEL_HELP + "; repeatable; all = every matrix entry (default: the matrix)",
        "arch": ARCH_HELP + "; repeatable; a foreign arch is cross-built with Debian's cross gcc",
        "flavour": FLAVOUR_HELP,
        "suite": SUITE_HELP,
        "json": "write the JSON report here (schema smcpatch-report/1)",
        "vex": VEX_HELP,
        "vex_format": VEX_FORMAT_HELP,
        "vex_publisher": VEX_PUBLISHER_HELP,
        "vex_namespace": VEX_NAMESPACE_HELP,
        "junit": JUNIT_HELP,
        "fail_on_vulnerable": "exit 1 also when Debian's own module of a target is vulnerable "
                              "(or undecided), not only when our fix is not verified: for CI "
                              "jobs that gate on what machines run",
        "load": "also boot each kernel (its own arch, QEMU TCG) and insmod the after-module",
        "parallel": "targets verified at once (default: the number of cores)",
        "jobs": "make -j per target (default: the cores shared by the targets at once)",
        "cache": CACHE_HELP,
        "fix": "default (the series' default set), all, or a fix id (repeatable); each fix "
               "chosen is judged on its own",
        "source": "your own kernel tree (or a dir holding net/smc); needs --kdir",
        "kdir": "your prepared kernel build/headers directory (make -C KDIR M=...)",
        "sign_key": "sign each fixed after-module with this private key (PEM) and the kernel's "
                    "scripts/sign-file; needs --sign-cert",
        "sign_cert": "the X.509 certificate of --sign-key (PEM or DER)",
        "matrix": MATRIX_HELP,
        "patches": PATCHES_HELP,
    },
)
def verify(c: Context, kernel: list[str] | None = None, arch: list[str] | None = None,
           flavour: str = "", suite: str | None = None, json: str | None = None,
           vex: str | None = None, vex_format: list[str] | None = None,
           vex_publisher: str | None = None, vex_namespace: str | None = None,
           junit: str | None = None, fail_on_vulnerable: bool = False,
           load: bool = False, parallel: str | None = None, jobs: str | None = None,
           cache: str | None = None, fix: list[str] | None = None, source: str | None = None,
           kdir: str | None = None, sign_key: str | None = None, sign_cert: str | None = None,
           matrix: str | None = None, patches: str | None = None) -> None:
    """Fetch, patch, build and inspect smc.ko before and after the fix.

    Two answers per kernel, never one for the other: what Debian's own module is (vulnerable or
    fixed: what machines run) and whether our fixed module is verified (every check passed).

    Exit 0 when our fix is verified for every target (with --fail-on-vulnerable: and Debian's
    module is fixed), 1 otherwise, 2 on bad input.
    """
    from .commands import verify as verify_cmd  # each task imports only what it runs

    with reported_errors():
        request = verify_cmd.VerifyRequest(
            kernels=_kernel_request(kernel, arch, flavour, suite, matrix, source, kdir),
            cache_dir=_path(cache), json_path=_output(json, "--json"),
            vex=_vex(vex, vex_format, vex_publisher, vex_namespace),
            junit_path=_output(junit, "--junit"), fixes=fix or None,
            jobs=_int(jobs, "--jobs", 0, 0, 256) or None,
            parallel=_int(parallel, "--parallel", 0, 0, 64) or None,
            sign_key=_input(sign_key, "--sign-key", "private key", KEY_LIMIT),
            sign_cert=_input(sign_cert, "--sign-cert", "certificate", KEY_LIMIT),
            patches=_path(patches),  # its series is read (and checked) before any download
            load=load, fail_on_vulnerable=fail_on_vulnerable)
        _distinct({"--json": request.json_path, "--junit": request.junit_path}, request.vex)
        with render.progress_display(console) as display:
            result = verify_cmd.run(request, display)
        render.print_summary(result.reports, console)
        for path, what in ((json, "JSON report"), (junit, "JUnit")):
            if path:
                console.print(render.fmt("{}: {}", what, path))
        _say_vex(request.vex)
        failed = [f"{r.package_version} {r.flavour}: {r.error}" for r in result.reports
                  if r.error]
        if failed:  # a target that could not be verified: one line on stderr for build farms
            errors.print(render.fmt("[red]error:[/] {}", "; ".join(failed)), soft_wrap=True)
        _say_why(result.exit_code, result.why)
    _fail(result.exit_code)


@task(iterable=["arch"], auto_shortflags=False, help={
    "format": "github (a GitHub Actions strategy.matrix, JSON) | json | text (default: text)",
    "flavour": FLAVOUR_HELP,
    "arch": ARCH_HELP + "; repeatable",
    "matrix": MATRIX_HELP,
})
def matrix(c: Context, format: str = "text", flavour: str = "",
           arch: list[str] | None = None, matrix: str | None = None) -> None:
    """Print the default matrix as CI jobs, one per target.

    With --format github, feed it to `strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`;
    each job writes its --json report and `smcpatch report --merge DIR` joins them. Exit 0; 2 on
    bad input.
    """
    from .commands import kernels as kernels_cmd

    with reported_errors():
        _choice(format, "--format", ("github", "json", "text"))
        request = _kernel_request(None, arch, flavour, None, matrix)
        print(kernels_cmd.matrix_text(format, flavour, request.matrix,
                                      list(request.arches) or None))


@task(auto_shortflags=False, help={
    "merge": "a directory holding the JSON reports of several runs (e.g. one per CI job)",
    "json": "also write the merged report here",
    "fail_on_vulnerable": "exit 1 also when a target's Debian module is vulnerable",
})
def report(c: Context, merge: str | None = None, json: str | None = None,
           fail_on_vulnerable: bool = False) -> None:
    """Merge the JSON reports of several runs into one table and report.

    Every merged target is judged again from its own fields by the rule verify uses (a report's
    word `ok` is not taken). Exit 0 when every target's fix is verified, 1 otherwise, 2 on a
    malformed report or bad input.
    """
    from .commands import report as report_cmd

    with reported_errors():
        directory = files.check_input_dir(files.user_path(_required(merge, "--merge DIR"),
                                                          "--merge"), "JSON reports")
        result = report_cmd.merge(directory, _output(json, "--json"), fail_on_vulnerable)
        render.print_summary(result.reports, console)
        if json:
            console.print(render.fmt("JSON: {}", json))
        _say_why(result.exit_code, result.why)
    _fail(result.exit_code)


@task(auto_shortflags=False, help={
    "module": "smc.ko, smc.ko.xz/.zst/.gz (also Debian's stripped modules) or smc_clc.o",
    "json": "print the result as JSON (schema smcpatch-inspect/1) instead of text",
    "release": "also check vermagic against this kernel release, e.g. 6.1.0-50-amd64",
    "symvers": "also check modversions CRCs against this Module.symvers",
})
def inspect(c: Context, module: str | None = None, json: bool = False,
            release: str | None = None, symvers: str | None = None) -> None:
    """Inspect any SMC module and print the verdict with its evidence.

    Exit 0 fixed, 1 vulnerable, 2 undecided or bad input, 4 fixed but the kernel named by
    --release/--symvers would refuse it (the reason is printed).
    """
    from .commands import inspect as inspect_cmd

    with reported_errors():
        path = files.check_input(files.user_path(_required(module, "--module PATH"), "--module"),
                                 "kernel module",
                                 inspect_cmd.MODULE_LIMIT)
        result = inspect_cmd.run(path, release or None,
                                 _input(symvers, "--symvers", "Module.symvers",
                                        inspect_cmd.SYMVERS_LIMIT))
        if json:
            print(dump_json(result.to_json()))
        else:
            render.print_inspect(result.to_json(), console)
        if result.why:
            errors.print(render.fmt("[yellow]note:[/] {}", result.why), soft_wrap=True)
    _fail(result.exit_code)


@task(iterable=["fix"], auto_shortflags=False, help={
    "kernel": KERNEL_HELP + " (one)",
    "out": "write a DKMS package here whose sources dkms patches at build time (new, empty, or "
           "an earlier package of ours); default: module_src/<release>, the verified fixed "
           "sources themselves, built by DKMS or a plain `make -C KDIR M=$PWD`",
    "arch": ARCH_HELP + " (one; the package itself serves every arch)",
    "flavour": "the headers --check builds against (the package serves every flavour)",
    "suite": SUITE_HELP,
    "check": "also `dkms build` it with Debian's dkms against the extracted headers (private "
             "dkms trees, nothing installed) and inspect the smc.ko it makes",
    "sign_key": "with --check: dkms signs the module with this key (PEM); needs --sign-cert",
    "sign_cert": "the X.509 certificate of --sign-key (PEM or DER)",
    "json": "print the summary as JSON (schema smcpatch-dkms/1)",
    "jobs": "make -j for --check (default: the number of cores)",
    "fix": "default, all, or a fix id (repeatable)",
    "cache": CACHE_HELP,
    "matrix": MATRIX_HELP,
    "patches": PATCHES_HELP,
})
def dkms(c: Context, kernel: str | None = None, out: str | None = None, arch: str = "",
         flavour: str = "", suite: str | None = None, check: bool = False,
         sign_key: str | None = None, sign_cert: str | None = None, json: bool = False,
         jobs: str | None = None, fix: list[str] | None = None, cache: str | None = None,
         matrix: str | None = None, patches: str | None = None) -> None:
    """Write the fixed module's sources for a kernel (module_src/ or DKMS).

    By default module_src/<release>/: our verified fixed net/smc with a dkms.conf and a Makefile
    (`make -C /lib/modules/<release>/build M=$PWD`, or `dkms add`). With --out: a DKMS package of
    Debian's sources whose PATCH lines dkms applies.

    Exit 0 when written (with --check: dkms built a module inspected fixed), 1 when the checked
    module is not fixed, 2 on bad input.
    """
    from .commands import dkms as dkms_cmd

    with reported_errors():
        out_dir = files.user_path(out, "--out") if out is not None else None
        request = dkms_cmd.DkmsRequest(
            kernels=_kernel_request([_required(kernel, "--kernel")], [arch] if arch else None,
                                    flavour, suite, matrix),
            out_dir=out_dir, cache_dir=_path(cache), fixes=fix or None,
            patches=_path(patches), check=check,
            jobs=_int(jobs, "--jobs", 0, 0, 256) or None,
            sign_key=_input(sign_key, "--sign-key", "private key", KEY_LIMIT),
            sign_cert=_input(sign_cert, "--sign-cert", "certificate", KEY_LIMIT))
        with render.progress_display(console) as display:
            result = dkms_cmd.run(request, display)
        if json:
            print(dump_json(result.to_json()))
        else:
            render.print_dkms(result.to_json(), console)
    _fail(result.exit_code)


@task(auto_shortflags=False, help={
    "kernel": KERNEL_HELP + " (one)",
    "arch": "amd64 (the default; Debian's other kernels have no CONFIG_LIVEPATCH)",
    "out": "build the livepatch here (new, empty, or an earlier one of ours; default: "
           "livepatch/<release>)",
    "suite": SUITE_HELP,
    "json": "write the result here (schema smcpatch-livepatch/1)",
    "force": "build even when Debian's module is already fixed",
    "sign_key": "sign the livepatch with this private key (PEM), e.g. DKMS's MOK key "
                "(/var/lib/dkms/mok.key): Secure Boot refuses unsigned modules",
    "sign_cert": "the X.509 certificate of --sign-key (PEM or DER)",
    "prove": "boot Debian's kernel under QEMU: load its smc.ko, then the livepatch; wait for "
             "the transition, disable and remove it (nothing is loaded on this host)",
    "jobs": "make -j (default: the number of cores)",
    "cache": CACHE_HELP,
    "matrix": MATRIX_HELP,
})
def livepatch(c: Context, kernel: str | None = None, arch: str = "", out: str | None = None,
              suite: str | None = None, json: str | None = None, force: bool = False,
              prove: bool = False, sign_key: str | None = None, sign_cert: str | None = None,
              jobs: str | None = None, cache: str | None = None,
              matrix: str | None = None) -> None:
    """Build a livepatch replacing smc_clc_prfx_match() in a running smc.

    Our verified fixed function, compiled against the kernel's headers with its own compiler,
    on klp_object "smc"; judged like every module we build; with --prove applied and removed in
    Debian's kernel under QEMU. Exit 0 when built and judged fixed (or Debian's module is already
    fixed: nothing built), 1 when the livepatch is not judged fixed, would not load or failed in
    the guest, 2 on bad input (a kernel that cannot live-patch, a fix that needs an
    unexported symbol).
    """
    from .commands import livepatch as livepatch_cmd

    with reported_errors():
        request = livepatch_cmd.LivepatchRequest(
            kernels=_kernel_request([_required(kernel, "--kernel")], [arch] if arch else None,
                                    "", suite, matrix),
            out_dir=_path(out), json_path=_output(json, "--json"), cache_dir=_path(cache),
            force=force, jobs=_int(jobs, "--jobs", 0, 0, 256) or None, prove=prove,
            sign_key=_input(sign_key, "--sign-key", "private key", KEY_LIMIT),
            sign_cert=_input(sign_cert, "--sign-cert", "certificate", KEY_LIMIT))
        livepatch_cmd.check_request(request)
        with render.progress_display(console) as display:
            result = livepatch_cmd.run(request, display)
        console.print(render.fmt("{}", result.message), soft_wrap=True)
        if result.built:
            console.print(render.fmt("signature: {}", result.signature), soft_wrap=True)
        if result.undefined:
            console.print(render.fmt("undefined symbols: {}", ", ".join(result.undefined)),
                          soft_wrap=True)
        if result.judgement is not None:
            for reason in result.judgement.reasons:
                console.print(render.fmt("  - {}", reason), soft_wrap=True)
            console.print(f"  vermagic ok: {result.judgement.vermagic_ok}, CRCs ok: "
                          f"{result.judgement.modversions_ok}")
        if result.proof is not None:
            p = result.proof
            console.print(visible(
                f"guest ({p.release}, QEMU): {'proven' if p.ok else 'NOT proven'}: "
                f"insmod {p.insmod}, enabled {p.enabled}, transition {p.transition} "
                f"after {p.transition_seconds} s, smc patched {p.smc_patched}, "
                f"disabled and gone {p.gone}, rmmod {p.rmmod_status}; console: {p.console}"),
                markup=False, soft_wrap=True)
        if json:
            console.print(render.fmt("JSON: {}", json))
    _fail(result.exit_code)


@task(auto_shortflags=False, help={
    "kernel": f"the Debian kernel to boot (default: {GUEST_KERNEL}, a vulnerable one)",
    "suite": SUITE_HELP,
    "variant": "after (our fix, default) | canary (the fix + a deliberate 100 us delay in "
               "smc_clc_prfx_match: proves the gate can fail)",
    "check": "exit 1 when the variant is slower than before beyond --threshold, significantly",
    "threshold": "regression threshold, a fraction (default: 0.05)",
    "runs": "pyperf runs per mode and variant, each one module load, interleaved (default: 20)",
    "connections": "connections per run (default: 300)",
    "modes": "comma-separated subset of smcr,clcv1,tcp (default: all three)",
    "results": "results directory (default: results/bench-<kernel>-<variant>)",
    "host_clock": "time with the host clock instead of QEMU's instruction-count clock (noisy)",
    "timeout": "guest timeout in seconds (default: 900)",
    "junit": "write JUnit XML here: one test case per mode and candidate",
    "cache": CACHE_HELP,
    "matrix": MATRIX_HELP,
})
def bench(c: Context, kernel: str = GUEST_KERNEL, suite: str | None = None,
          variant: str = "after", check: bool = False, threshold: str | None = None,
          runs: str | None = None, connections: str | None = None,
          modes: str = "smcr,clcv1,tcp", results: str | None = None, host_clock: bool = False,
          timeout: str | None = None, junit: str | None = None, cache: str | None = None,
          matrix: str | None = None) -> None:
    """Measure SMC handshake latency before vs after the fix, in QEMU.

    The real Debian kernel boots under QEMU with Soft-RoCE; pyperf measures; every run is proven
    from the kernel's SMC counters. Results (pyperf JSON per mode and variant, compare_to.txt,
    latency.png, summary.md) go to one directory. Exit 0; with --check 1 on a significant
    regression; 2 on bad input.
    """
    from .commands import bench as bench_cmd
    from .guest.latency import BenchConfig

    with reported_errors():
        config = BenchConfig(
            modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
            runs=_int(runs, "--runs", 20, 2, 1000),
            connections_per_run=_int(connections, "--connections", 300, 1, 100_000),
            threshold=_float(threshold, "--threshold", 0.05, 0.001, 0.999),
            timeout_s=_int(timeout, "--timeout", 900, 30, 86_400),
            icount=None if host_clock else BenchConfig().icount)
        request = bench_cmd.BenchRequest(
            config=config, kernel=kernel, suite=suite or None, variant=variant,
            matrix=_kernel_request([kernel], ["amd64"], "", suite, matrix).matrix,
            results=_output_dir(results, "--results"), cache_dir=_path(cache))
        junit_path = _output(junit, "--junit")
        request.check()
        with render.progress_display(console) as display:
            outcome = bench_cmd.run(request, display)
        for line in outcome.gate_lines:
            console.print(render.plain(line))
        result = outcome.result
        if junit_path:
            from .outputs import junit as junit_xml

            junit_xml.write(junit_path, junit_xml.bench_suite(result, config.threshold))
        console.print(f"boot to guest script {result.boot_s or 0:.1f} s, "
                      f"total {result.wall_s:.0f} s")
        console.print(render.fmt("results: {} "
                                 "(summary.md, latency.png, compare_to.txt, pyperf *.json)",
                                 result.results_dir))
    _fail(outcome.exit_code(check))


def _output_dir(value: str | None, option: str) -> Path | None:
    """A results directory: new, empty or one of ours; refused now otherwise."""
    if value is None:
        return None
    from .guest.latency import RESULTS_MARKER

    return files.check_own_dir(files.user_path(value, option), option, RESULTS_MARKER)


@task(iterable=["suite", "arch", "vex_format"], auto_shortflags=False, help={
    "suite": "a suite to scan (repeatable; default: the host's release and its -security)",
    "arch": ARCH_HELP + "; repeatable",
    "flavour": FLAVOUR_HELP.replace("plain flavour (default)", "plain flavour") +
               " (default: all)",
    "json": "write every image's result here (schema smcpatch-scan/1)",
    "vex": VEX_HELP.replace("verify's rebuilt after-modules", "its module's SHA256"),
    "vex_format": VEX_FORMAT_HELP,
    "vex_publisher": VEX_PUBLISHER_HELP,
    "vex_namespace": VEX_NAMESPACE_HELP,
    "junit": "write JUnit XML here (one test case per image: a vulnerable one fails)",
    "parallel": "downloads at once (default: 4)",
    "cache": CACHE_HELP,
})
def scan(c: Context, suite: list[str] | None = None, arch: list[str] | None = None,
         flavour: str = "all", json: str | None = None, vex: str | None = None,
         vex_format: list[str] | None = None, vex_publisher: str | None = None,
         vex_namespace: str | None = None, junit: str | None = None,
         parallel: str | None = None, cache: str | None = None) -> None:
    """Judge every published Debian kernel image from its own smc.ko.

    Only the image debs are downloaded; results are cached by package SHA256; what Debian's
    changelog says is shown beside each. Exit 0 when every image was judged and no changelog
    contradicts its binary, 1 otherwise, 2 on bad input. Vulnerable images are findings, not
    failures (the JUnit file fails them).
    """
    from .commands import scan as scan_cmd

    with reported_errors():
        request = scan_cmd.ScanRequest(
            suites=suite or [], arches=arch or [], flavour=flavour, cache_dir=_path(cache),
            json_path=_output(json, "--json"),
            vex=_vex(vex, vex_format, vex_publisher, vex_namespace),
            junit_path=_output(junit, "--junit"),
            parallel=_int(parallel, "--parallel", 4, 1, 16))
        _distinct({"--json": request.json_path, "--junit": request.junit_path}, request.vex)
        scan_cmd.check_request(request)
        with render.progress_display(console) as display:
            result = scan_cmd.run(request, display)
        render.print_scan(result, console)
        for path, what in ((json, "JSON"), (junit, "JUnit")):
            if path:
                console.print(render.fmt("{}: {}", what, path))
        _say_vex(request.vex)
        failed = [f"{r.package} {r.version}: {r.error}" for r in result.rows if r.error]
        if failed:
            errors.print(render.fmt("[red]error:[/] {}", "; ".join(failed)), soft_wrap=True)
    _fail(result.exit_code)


@task(auto_shortflags=False, help={
    "kernel": f"the Debian kernel to boot (default: {GUEST_KERNEL}, a vulnerable one)",
    "suite": SUITE_HELP,
    "seconds": "churn time per variant (default: 60)",
    "attempts": "churn cycles per variant: the device deleted and recreated (default: as many "
                "as --seconds allows)",
    "widen": "use instrumented builds of both variants: a 20 ms busy-wait at the same point "
             "(between taking the dst and reading its device); with --sanitizer, a 20 ms "
             "re-read of the device instead (KCSAN's sampling lands on it); said in the report",
    "sanitizer": "boot a debug kernel built from the kernel's own Debian source instead of "
                 "Debian's binary: kcsan (data races) or kasan (KASAN + lockdep); built once "
                 "and cached (10-25 min and about 2.5 GB of disk the first time)",
    "canary": "with --sanitizer kasan: a third boot, our fix with its rcu_read_lock() moved "
              "after the device read (not a fix), which lockdep must report; exit 1 if it "
              "does not (the checker's silence would prove nothing)",
    "json": "write the result here (schema smcpatch-race/1)",
    "cache": CACHE_HELP,
    "matrix": MATRIX_HELP,
})
def race(c: Context, kernel: str = GUEST_KERNEL, suite: str | None = None,
         seconds: str | None = None, attempts: str | None = None, widen: bool = False,
         sanitizer: str | None = None, canary: bool = False, json: str | None = None,
         cache: str | None = None, matrix: str | None = None) -> None:
    """Attack the race: both modules in Debian's kernel under device churn.

    A veth pair is deleted and recreated under clcv1 handshakes, with slab poisoning, KFENCE and
    the lockup/stall detectors on; splats come from the kernel, never from timing. With
    --sanitizer, a debug kernel of the same Debian source (KCSAN, or KASAN with lockdep) is
    booted instead and both modules are built against it. Exit 0 when the fixed module survives
    every attempt with no splat, 1 when it does not, 2 on bad input; the vulnerable module's
    outcome is reported as it is.
    """
    from .commands import race as race_cmd
    from .guest.debugkernel import NAMES as SANITIZERS

    with reported_errors():
        request = race_cmd.RaceRequest(
            kernel=kernel, suite=suite or None,
            seconds=_float(seconds, "--seconds", 60.0, 1.0, 3600.0),
            attempts=_int(attempts, "--attempts", 0, 0, 1_000_000), widen=widen,
            sanitizer=(_choice(sanitizer, "--sanitizer", SANITIZERS) if sanitizer is not None
                       else None), canary=canary,
            json_path=_output(json, "--json"), cache_dir=_path(cache),
            matrix=_kernel_request([kernel], ["amd64"], "", suite, matrix).matrix)
        with render.progress_display(console) as display:
            result = race_cmd.run(request, display)
        render.print_race(result, console)
        if json:
            console.print(render.fmt("JSON: {}", json))
    _fail(result.exit_code)


@task(iterable=["vex_format"], auto_shortflags=False, help={
    "root": "the machine's root directory: / (default) or a mounted image; the running kernel, "
            "/proc and the kernel command line count only for /",
    "json": "write the result here (schema smcpatch-host/1)",
    "vex": "write VEX here: one statement per installed kernel package (its smc.ko by purl "
           "subpath and SHA256): OpenVEX 0.2.0, or each --vex-format",
    "vex_format": VEX_FORMAT_HELP,
    "vex_publisher": VEX_PUBLISHER_HELP,
    "vex_namespace": VEX_NAMESPACE_HELP,
    "mitigate": f"first write {HOST_MITIGATION} under --root (install smc /bin/false, "
                "blacklist smc): "
                "every modprobe of smc stopped; a loaded smc stays until rmmod or reboot",
    "unmitigate": f"first remove {HOST_MITIGATION} (only smcpatch's own)",
    "cache": CACHE_HELP + "; Debian's advice is cached there",
})
def host(c: Context, root: str = "/", json: str | None = None, vex: str | None = None,
         vex_format: list[str] | None = None, vex_publisher: str | None = None,
         vex_namespace: str | None = None, mitigate: bool = False, unmitigate: bool = False,
         cache: str | None = None) -> None:
    """Say whether this machine is exposed, and what to do now.

    Per installed kernel: Debian's smc.ko judged, the package that owns it, whether smc is
    loaded and whether it can load (modprobe.d, the kernel command line), and for a vulnerable
    one the Debian version that fixed it and whether the machine's suites offer it.

    Exit 0 when no vulnerable (or undecided) smc.ko is loaded or can load, 1 when one is, 2 on
    bad input.
    """
    from .commands import host as host_cmd

    with reported_errors():
        if mitigate and unmitigate:
            raise BadInput("--mitigate and --unmitigate together: choose one")
        if not root.strip():  # not taken as `/`: an unset variable must not judge this machine
            raise BadInput('--root "": give a directory (/ for this machine)')
        request = host_cmd.HostRequest(
            root=Path(root).expanduser(), json_path=_output(json, "--json"),
            vex=_vex(vex, vex_format, vex_publisher, vex_namespace), cache_dir=_path(cache),
            action="mitigate" if mitigate else "unmitigate" if unmitigate else None)
        _distinct({"--json": request.json_path}, request.vex)
        host_cmd.check_request(request)
        result = host_cmd.run(request)
        render.print_host(result, console)
        if json:
            console.print(render.fmt("JSON: {}", json))
        _say_vex(request.vex)
    _fail(result.exit_code)


@task(auto_shortflags=False, help={
    "kernel": KERNEL_HELP + " (one): its Debian source, fetched and cached as verify does",
    "source": "your own kernel tree (its top directory) instead of --kernel",
    "general": "also the general rule: any ->dev (or dst_dev()) read from a dst taken with "
               "sk_dst_get() in net/, drivers/net and drivers/infiniband; its sites are "
               "candidates to read and leave the exit code alone",
    "suite": SUITE_HELP,
    "json": "write every site here, file:line each (schema smcpatch-audit/1)",
    "timeout": "seconds one rule's spatch run may take (default: 600)",
    "cache": CACHE_HELP,
    "matrix": MATRIX_HELP,
})
def audit(c: Context, kernel: str | None = None, source: str | None = None,
          general: bool = False, suite: str | None = None, json: str | None = None,
          timeout: str | None = None, cache: str | None = None,
          matrix: str | None = None) -> None:
    """Find sk_dst_get()->dev reads in kernel source with Coccinelle.

    One rule per fix of the series, in cvehound's format (CVE-2025-40168, CVE-2025-40139,
    CVE-2025-40064, smc_vlan_by_tcpsk's 0b0e4d51c655, tls's CVE-2025-40149), run with Debian's
    spatch (installed when missing) over a Debian kernel's source or your tree. One line per
    site: file:line, function, fix.

    Exit 0 when no known vulnerable site is found, 1 when one is (or spatch failed: one error
    line says so), 2 on bad input.
    """
    from .commands import audit as audit_cmd

    with reported_errors():
        if source and (suite or matrix):
            raise BadInput("--suite and --matrix choose a Debian kernel: they go with --kernel")
        request = audit_cmd.AuditRequest(
            kernels=_kernel_request([kernel], None, "", suite, matrix) if kernel else None,
            source=_path(source), general=general, json_path=_output(json, "--json"),
            cache_dir=_path(cache),
            timeout=_float(timeout, "--timeout", 600.0, 10.0, 86_400.0))
        audit_cmd.check_request(request)
        with render.progress_display(console) as display:
            result = audit_cmd.run(request, display)
        for line in [*result.site_lines(), *result.rule_lines(), result.summary()]:
            console.print(render.fmt("{}", line), soft_wrap=True)
        if json:
            console.print(render.fmt("JSON: {}", json), soft_wrap=True)
    _fail(result.exit_code)


namespace = Collection(kernels, verify, matrix, report, inspect, dkms, bench, scan, race, host,
                       audit, livepatch)


# -- the console script: smcpatch's own tasks and options, nothing of invoke's --------------------
EXIT_CODES = ("exit codes: 0 done, 1 a failed check, 2 bad input or undecided, 3 a bug,\n"
              "  4 fixed but refused by the kernel (inspect), 130 Ctrl-C, 141 closed pipe,\n"
              "  143 SIGTERM (each task's help says more)")


def _options(t: Task[Any]) -> dict[str, tuple[str, Any]]:
    """--option-name -> (parameter, its default) of a task."""
    params = list(pyinspect.signature(t.body).parameters.values())[1:]
    return {"--" + p.name.replace("_", "-"): (p.name, p.default) for p in params}


def _summary(t: Task[Any]) -> str:
    return (pyinspect.getdoc(t.body) or "").split("\n", 1)[0]


def print_help() -> None:
    width = max(len(name) for name in namespace.tasks)
    print("usage: smcpatch <task> [options]     smcpatch <task> -h: the task's options\n")
    print("Is this kernel's SMC module fixed against CVE-2025-40168, and at what cost?\n")
    print("tasks:")
    for name, t in namespace.tasks.items():
        print(f"  {name:<{width}} {_summary(t)}")  # one space: 80 columns with `livepatch`
    print("\noptions:\n  -h, --help     this help\n  -V, --version  the version\n"
          "  -l, --list     the tasks, one per line\n")
    print(EXIT_CODES)


_PATHS = {"json", "vex", "junit", "out", "results", "module", "symvers", "matrix", "patches",
          "source", "kdir", "cache", "merge", "sign_key", "sign_cert", "root"}
_NUMBERS = {"parallel", "jobs", "runs", "connections", "timeout", "seconds", "attempts",
            "threshold"}


def _metavar(param: str) -> str:
    if param in _PATHS:
        return "PATH" if param not in ("merge", "results", "out", "source", "kdir", "cache",
                                       "patches", "root") else "DIR"
    return "N" if param in _NUMBERS else param.upper().replace("_", "-")


def print_task_help(name: str) -> None:
    t = namespace.tasks[name]
    width = min(100, max(60, shutil.get_terminal_size((80, 24)).columns))
    print(f"usage: smcpatch {name} [options]\n")
    for paragraph in (pyinspect.getdoc(t.body) or "").split("\n\n"):
        print(textwrap.fill(" ".join(paragraph.split()), width=width) + "\n")
    print("options:")
    for option, (param, default) in _options(t).items():
        kind = "" if isinstance(default, bool) else " " + _metavar(param)
        text = t.help.get(param, "")
        if param in t.iterable and "repeatable" not in text:
            text += "; repeatable"
        print(f"  {option}{kind}")
        print(textwrap.fill(text, width=width, initial_indent=" " * 6,
                            subsequent_indent=" " * 6))
    print("  -h, --help\n      this help")


def parse_argv(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(task, its keyword arguments) from argv, or None when help or the version was printed.
    Anything unknown is bad input (exit 2), never a guess."""
    if not argv:  # a usage error, as argparse-based tools say it: the help on stderr, exit 2
        with contextlib.redirect_stdout(sys.stderr):
            print_help()
        raise Exit(code=2)
    if argv[0] in ("-h", "--help"):
        print_help()
        return None
    if argv[0] in ("-V", "--version"):
        print(f"smcpatch {__version__}")
        return None
    if argv[0] in ("-l", "--list"):
        for name in namespace.tasks:
            print(name)
        return None
    name, rest = argv[0], argv[1:]
    if name not in namespace.tasks:
        raise BadInput(f"unknown task {name!r}: choose {', '.join(namespace.tasks)} "
                       "(smcpatch --help)")
    t = namespace.tasks[name]
    if "-h" in rest or "--help" in rest:
        print_task_help(name)
        return None
    options = _options(t)
    kwargs: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        option, has_value, value = word.partition("=")
        if option not in options:
            raise BadInput(f"{name}: unknown option {word!r} (smcpatch {name} -h)")
        param, default = options[option]
        if isinstance(default, bool):
            if has_value:
                raise BadInput(f"{name}: {option} takes no value")
            kwargs[param] = True
        else:
            if not has_value:
                i += 1
                if i >= len(rest) or (rest[i].startswith("--") and len(rest[i]) > 2):
                    raise BadInput(f"{name}: {option} needs a value")
                value = rest[i]
            if param in t.iterable:
                kwargs.setdefault(param, []).append(value)
            elif param in kwargs:
                raise BadInput(f"{name}: {option} given twice")
            else:
                kwargs[param] = value
        i += 1
    return name, kwargs


def main(argv: list[str] | None = None) -> NoReturn:
    """The `smcpatch` console script: the whole run, from the signal handlers to the last
    flush, inside the one error edge (smcpatch.__main__ made the process safe before this)."""
    proc.handle_signals()
    args = sys.argv[1:] if argv is None else argv
    try:
        with reported_errors():
            parsed = parse_argv(args)
            if parsed is not None:
                name, kwargs = parsed
                namespace.tasks[name].body(Context(), **kwargs)
            sys.stdout.flush()  # what print() left in the buffer meets a reader gone only here
        code = 0
    except Exit as exc:
        code = exc.code
    except BaseException as exc:  # a signal while the edge was reporting another outcome
        interrupt = exc if isinstance(exc, KeyboardInterrupt) else proc.interrupt_behind(exc)
        if interrupt is None:
            raise
        code = proc.exit_code(interrupt)
    proc.ignore_signals()  # the run is over: its exit code stands
    sys.exit(code)

