"""`dkms`: a DKMS source package of the fixed SMC module for one kernel, optionally built with
Debian's dkms against the extracted headers and inspected."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, inspection
from ..errors import BadInput
from ..kernels.request import KernelRequest
from ..kernels.resolve import resolve
from ..kernels.targets import HOST_ARCH, Target
from ..packaging import dkms, signing
from ..pipeline import variants
from ..pipeline.prepare import Options, Prepared, prepare
from ..plumbing.cache import Cache
from ..plumbing.progress import QUIET, Display
from . import EXIT_FAIL, EXIT_OK

SCHEMA = "smcpatch-dkms/1"
MODULE_SRC = Path("module_src")  # the default --out: module_src/<release>, in the current dir


@dataclass
class DkmsRequest:
    kernels: KernelRequest  # one kernel
    out_dir: Path | None = None  # None: module_src/<release>, the fixed sources themselves
    cache_dir: Path | None = None
    fixes: list[str] | None = None
    patches: Path | None = None
    check: bool = False  # also `dkms build` it and inspect the module dkms made
    jobs: int | None = None
    sign_key: Path | None = None
    sign_cert: Path | None = None


@dataclass
class DkmsCheck:
    """What `dkms build` of the package made, judged."""

    release: str
    dkms: str
    seconds: float
    patches_applied: list[str]
    judgement: inspection.Judgement
    changed_vs_shipped: list[str] | None

    def to_json(self) -> dict[str, Any]:
        judged = self.judgement.to_json()
        return {"release": self.release, "dkms": self.dkms, "seconds": round(self.seconds, 1),
                "patches_applied": self.patches_applied, **{k: judged[k] for k in (
                    "verdict", "reasons", "vermagic_ok", "modversions_ok", "signature",
                    "signature_text")}, "changed_vs_shipped": self.changed_vs_shipped}


@dataclass
class DkmsResult:
    package: Path
    version: str
    kernel: str
    release_regex: str
    fixes: list[dict[str, str | None]] = field(default_factory=list)
    check: DkmsCheck | None = None
    fixed_sources: bool = False  # module_src: the fix is in the sources, no PATCH lines

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if self.check and self.check.judgement.verdict != "fixed" else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tool_version": __version__, "package": str(self.package),
                "name": dkms.PACKAGE_NAME, "version": self.version, "kernel": self.kernel,
                "release_regex": self.release_regex, "fixes": [dict(f) for f in self.fixes],
                "fixed_sources": self.fixed_sources,
                "check": self.check.to_json() if self.check else None}


def check_request(request: DkmsRequest) -> None:
    """What can be refused before any download."""
    if (request.sign_key is None) != (request.sign_cert is None):
        raise BadInput("signing needs both --sign-key and --sign-cert")
    if request.sign_key is not None and request.sign_cert is not None:
        if not request.check:
            raise BadInput("--sign-key/--sign-cert sign the module dkms builds: add --check")
        signing.check_key_matches_cert(request.sign_key, request.sign_cert)
    if request.out_dir is not None:
        dkms.check_out_dir(request.out_dir.expanduser().absolute())
    if len(request.kernels.kernels) != 1 or request.kernels.kernels[0] == "all":
        raise BadInput("dkms writes the package of one kernel: give one --kernel")
    if len(request.kernels.arches) > 1 or "all" in request.kernels.arches:
        raise BadInput("dkms writes the package of one kernel: give at most one --arch")


def run(request: DkmsRequest, display: Display = QUIET) -> DkmsResult:
    """Fetch and classify through the pipeline, write the package; with `check`, dkms-build it
    (in a temp dir under the cache, removed after) and judge the result."""
    check_request(request)
    cache = Cache.open(request.cache_dir)
    export = request.out_dir is None  # module_src/<release>: our verified fixed sources
    options = Options(fixes=request.fixes or ["default"], jobs=request.jobs,
                      through="inspect" if export else "classify")
    if request.patches is not None:
        options.patches_dir = request.patches
    options.selected_fixes  # noqa: B018 - a bad --fix: before any download
    [target] = resolve(cache, request.kernels)
    if target.judge_only:
        raise BadInput(f"kernel {target.package_version}: the mirrors serve its image but not "
                       "its sources: no DKMS package can be written (`smcpatch verify` judges "
                       "Debian's module)")
    _check_can_build_here(target, request.check)
    out_dir = (request.out_dir or MODULE_SRC / target.release).expanduser().absolute()
    dkms.check_out_dir(out_dir)
    tools = dkms.TOOLS if request.check else ()
    prepared = prepare(cache, [target], options, display, tools=tools)[0]
    if prepared.report.error or prepared.workspace is None:
        raise BadInput(f"kernel {prepared.label}: {prepared.report.error}")
    ws = prepared.workspace
    fixed_sources = None
    if export:
        if not prepared.report.ok or prepared.variants is None:
            raise BadInput(f"kernel {prepared.label}: our fix is not verified "
                           f"({'; '.join(prepared.report.problems)}): nothing exported")
        fixed_sources = variants.smc_dir(prepared.variants.after)
    package = dkms.write_package(ws, prepared.states, out_dir, fixed_sources)
    result = DkmsResult(
        package=package, version=dkms.package_version(ws), kernel=ws.target.package_version,
        release_regex=dkms.release_regex(ws),
        fixes=[{"id": s.fix_id, "state": s.state, "variant": s.variant.name,
                "patch": s.variant.path.name if s.state == "vulnerable" else None}
               for s in prepared.states], fixed_sources=export)
    if request.check:
        display.say(f"dkms build of {package.name} for {ws.target.release} ...")
        result.check = _dkms_check(cache, prepared, package, request)
    return result


def _check_can_build_here(target: Target, check: bool) -> None:
    if check and target.foreign:
        raise BadInput(f"--check runs dkms on this {HOST_ARCH} host, and dkms builds for the "
                       f"machine it runs on: check the {target.arch} package on an "
                       f"{target.arch} system (`inv verify --arch {target.arch}` "
                       "cross-builds and inspects the same fix here)")
    if check and target.build_env:
        raise BadInput(f"--check runs dkms with this host's compiler, but {target.version} is "
                       f"built with {target.compiler} of {target.build_env}: write the "
                       f"package without --check and build it on a {target.build_env} system")


def _dkms_check(cache: Cache, prepared: Prepared, package: Path,
                request: DkmsRequest) -> DkmsCheck:
    ws = prepared.workspace
    assert ws is not None
    tmp_root = cache.dir("tmp")
    tmp_root.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smcpatch-tmp-dkms-check-", dir=tmp_root) as tmp:
        built = dkms.build_package(ws, package, Path(tmp) / "work", request.jobs,
                                   request.sign_key, request.sign_cert)
        judgement = inspection.judge(built.smc, ws.target.release, ws.symvers)
        changed = (inspection.changed_functions(ws.shipped_module, built.smc)
                   if ws.shipped_module else None)
        return DkmsCheck(release=built.release, dkms=built.dkms_version, seconds=built.seconds,
                         patches_applied=built.patches_applied, judgement=judgement,
                         changed_vs_shipped=changed)

