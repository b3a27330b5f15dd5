"""`verify`: fetch → classify → variants → build → inspect → report, for every kernel asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, SmcpatchError
from ..kernels.request import KernelRequest
from ..outputs import jsonreport
from ..outputs.vex import VexOutput
from ..packaging import signing
from ..pipeline import report
from ..pipeline.prepare import Options, Prepared, prepare
from ..plumbing.cache import Cache
from ..plumbing.progress import QUIET, Display
from . import exit_code


@dataclass
class VerifyRequest:
    kernels: KernelRequest
    cache_dir: Path | None = None
    json_path: Path | None = None
    fixes: list[str] | None = None
    jobs: int | None = None
    parallel: int | None = None
    sign_key: Path | None = None
    sign_cert: Path | None = None
    patches: Path | None = None  # --patches: a patch series of the user's (default: ours)
    load: bool = False  # --load: insmod each after-module into its kernel in a QEMU guest
    vex: VexOutput | None = None  # --vex, --vex-format: Debian's images and our modules
    junit_path: Path | None = None  # --junit: one test case per target and check
    fail_on_vulnerable: bool = False  # exit 1 also for a vulnerable (or undecided) shipped module


@dataclass
class VerifyResult:
    reports: list[report.TargetReport]
    exit_code: int


def run(request: VerifyRequest, display: Display = QUIET) -> VerifyResult:
    """Every check of the request is made before any download: bad input fails fast."""
    cache = Cache.open(request.cache_dir)
    options = Options(fixes=request.fixes or ["default"], jobs=request.jobs)
    if request.patches is not None:
        options.patches_dir = request.patches
    if not options.selected_fixes:
        raise BadInput("no fixes selected: the series has no default fix")
    if request.sign_key or request.sign_cert:
        if not (request.sign_key and request.sign_cert):
            raise BadInput("--sign-key and --sign-cert go together")
        signing.check_key_matches_cert(request.sign_key, request.sign_cert)
    prepared = prepare(cache, request.kernels, options, display, request.parallel)
    reports = [p.report for p in prepared]
    if request.load:
        load_modules(cache, prepared, display)
    if request.sign_key and request.sign_cert:  # each signed module gets a note in its report
        signing.sign_plan(cache, [(p.workspace, p.report) for p in prepared],
                          request.sign_key, request.sign_cert)
    if request.json_path:
        jsonreport.write_json(request.json_path, jsonreport.document(reports))
    if request.vex:
        from ..outputs import products, vex

        vex.write(request.vex, products.from_verify(reports))
    if request.junit_path:
        from ..outputs import junit

        junit.write(request.junit_path, junit.verify_suite(reports, request.fail_on_vulnerable))
    return VerifyResult(reports, exit_code(reports, request.fail_on_vulnerable))


def load_modules(cache: Cache, prepared: list[Prepared], display: Display = QUIET) -> None:
    """Boot each target's own kernel (any arch, QEMU TCG) and insmod its after-module; one guest
    at a time (TCG takes a core). The result joins the report and its checks."""
    from ..guest import loadcheck

    for item in prepared:
        ws, rep = item.workspace, item.report
        if ws is None or rep.after is None or rep.compile_only:
            continue  # nothing built (its error says why), or SMC off: nothing can load
        if ws.image_deb is None:
            rep.load = {"loaded": False, "detail": "no linux-image package to boot (a user tree: "
                                                   "--load needs an archive kernel)"}
        else:
            try:
                result = loadcheck.load_check(cache, ws.target.arch, ws.image_deb,
                                              Path(rep.after.path),
                                              display.reporter(f"{item.label} load"))
                rep.load = result.to_json()
            except SmcpatchError as exc:
                rep.load = {"loaded": False, "detail": exc.one_line()}
        rep.finish()
        display.say(f"{item.label}: {rep.load['detail']}")
