"""`livepatch`: a livepatch module for one Debian kernel, replacing smc_clc_prfx_match() of the
loaded smc.ko with our verified fixed function, judged like every module we build.

Refused before any download: more than one kernel, an architecture whose Debian kernels cannot
live-patch (CONFIG_LIVEPATCH=y in Debian's amd64 kernels only), a kernel whose image alone is
served. After fetch and classify (the earliest the state is known): a kernel whose Debian module
is already fixed is said so, exit 0, nothing built unless `force`. Then the pipeline builds and
verifies our after/ sources, packaging.livepatch makes the livepatch from them and
inspection.livepatch judges it; with `prove`, guest.livepatch applies and removes it in Debian's
kernel under QEMU."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadInput
from ..guest.livepatch import Proof, prove
from ..inspection.livepatch import LivepatchJudgement, judge_livepatch
from ..inspection.signature import describe, module_signature
from ..kernels.kconfig import KernelConfig
from ..kernels.request import KernelRequest
from ..kernels.resolve import resolve
from ..kernels.targets import Target
from ..outputs.text import command
from ..packaging import livepatch, signing
from ..pipeline import build, variants
from ..pipeline.prepare import Options, Prepared, prepare
from ..plumbing.cache import Cache
from ..plumbing.files import check_own_dir, write_output
from ..plumbing.progress import QUIET, Display
from . import EXIT_FAIL, EXIT_OK

SCHEMA = "smcpatch-livepatch/1"
OUT = Path("livepatch")  # the default --out: livepatch/<release>, in the current directory
MARKER = ".smcpatch-livepatch.json"
LIVEPATCH_ARCHES = ("amd64",)  # Debian's kernels with CONFIG_LIVEPATCH=y (DESIGN.md)
FIX = "CVE-2025-40168"


@dataclass
class LivepatchRequest:
    kernels: KernelRequest  # one kernel
    out_dir: Path | None = None
    json_path: Path | None = None
    cache_dir: Path | None = None
    force: bool = False  # build even when Debian's module is already fixed
    jobs: int | None = None
    prove: bool = False  # load it into Debian's kernel under QEMU (guest.livepatch)
    sign_key: Path | None = None  # e.g. DKMS's MOK key: Secure Boot refuses unsigned modules
    sign_cert: Path | None = None


@dataclass
class LivepatchResult:
    kernel: str
    release: str
    state: str  # Debian's module: vulnerable | fixed | unknown (classification of its source)
    built: bool
    message: str
    out_dir: Path | None = None
    module: Path | None = None
    source: Path | None = None
    undefined: list[str] = field(default_factory=list)
    build_seconds: float | None = None
    total_seconds: float = 0.0
    judgement: LivepatchJudgement | None = None
    proof: Proof | None = None
    signature: str = "unsigned"  # the appended signature, described (inspection.signature)

    @property
    def exit_code(self) -> int:
        if not self.built:
            return EXIT_OK
        j = self.judgement
        ok = (j is not None and j.verdict == "fixed" and j.vermagic_ok is True
              and j.modversions_ok is True)
        if self.proof is not None and not self.proof.ok:
            return EXIT_FAIL
        return EXIT_OK if ok else EXIT_FAIL

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tool_version": __version__, "kernel": self.kernel,
                "release": self.release, "state": self.state, "built": self.built,
                "message": self.message,
                "out_dir": str(self.out_dir) if self.out_dir else None,
                "module": str(self.module) if self.module else None,
                "source": str(self.source) if self.source else None,
                "klp_object": livepatch.KLP_OBJECT,
                "functions": sorted(livepatch.FUNCTIONS),
                "undefined_symbols": self.undefined,
                "build_seconds": (round(self.build_seconds, 2)
                                  if self.build_seconds is not None else None),
                "total_seconds": round(self.total_seconds, 2),
                "judgement": self.judgement.to_json() if self.judgement else None,
                "signature": self.signature,
                "proof": self.proof.to_json() if self.proof else None}


def check_request(request: LivepatchRequest) -> None:
    """What can be refused before the archive is read."""
    kernels = request.kernels
    if len(kernels.kernels) != 1 or kernels.kernels[0] == "all":
        raise BadInput("livepatch builds for one kernel: give one --kernel")
    if len(kernels.arches) > 1 or "all" in kernels.arches:
        raise BadInput("livepatch builds for one kernel: give at most one --arch")
    for arch in kernels.arches:
        check_arch(arch)
    if request.out_dir is not None:
        check_own_dir(request.out_dir.expanduser().absolute(), "--out", MARKER)
    if (request.sign_key is None) != (request.sign_cert is None):
        raise BadInput("signing needs both --sign-key and --sign-cert")
    if request.sign_key is not None and request.sign_cert is not None:
        signing.check_key_matches_cert(request.sign_key, request.sign_cert)


def check_arch(arch: str) -> None:
    if arch not in LIVEPATCH_ARCHES:
        raise BadInput(f"Debian's {arch} kernels cannot be live-patched (CONFIG_LIVEPATCH is "
                       f"set in Debian's {', '.join(LIVEPATCH_ARCHES)} kernels only): upgrade "
                       f"the kernel, or block smc (`{command('host', '--mitigate')}`)")


def check_target(target: Target) -> None:
    """The resolved kernel, before any download."""
    check_arch(target.arch)
    if target.judge_only:
        raise BadInput(f"kernel {target.package_version}: the mirrors serve its image but not "
                       "its sources: no livepatch can be built")


def check_config(config_path: Path, kernel: str) -> None:
    """The kernel's own .config (the headers'): livepatch needs CONFIG_LIVEPATCH=y."""
    if KernelConfig.read(config_path).get("CONFIG_LIVEPATCH") != "y":
        raise BadInput(f"kernel {kernel} is built without CONFIG_LIVEPATCH: it cannot be "
                       "live-patched")


def run(request: LivepatchRequest, display: Display = QUIET) -> LivepatchResult:
    started = time.monotonic()
    check_request(request)
    cache = Cache.open(request.cache_dir)
    [target] = resolve(cache, request.kernels)
    check_target(target)
    out_dir = (request.out_dir or OUT / target.release).expanduser().absolute()
    check_own_dir(out_dir, "--out", MARKER)

    classified = _prepare(cache, target, Options(through="classify"), display)
    ws = classified.workspace
    assert ws is not None
    check_config(ws.kernel_config, target.package_version)
    state = next((s.state for s in classified.states if s.fix_id == FIX), "unknown")
    result = LivepatchResult(kernel=target.package_version, release=target.release,
                             state=state, built=False, message="")
    if state == "fixed" and not request.force:
        result.message = (f"Debian's smc.ko of {target.package_version} is already fixed "
                          f"({FIX}): no livepatch needed, nothing built (--force builds one)")
        result.total_seconds = time.monotonic() - started
        _write_json(request, result)
        return result
    functions = sorted(livepatch.FUNCTIONS)
    if ws.shipped_module is not None:
        for function in functions:
            livepatch.shipped_function_check(ws.shipped_module, function)

    prepared = _prepare(cache, target, Options(jobs=request.jobs), display)
    report = prepared.report
    if not report.ok or prepared.variants is None:
        raise BadInput(f"kernel {prepared.label}: our fix is not verified "
                       f"({'; '.join(report.problems) or report.error}): no livepatch")
    display.say(f"livepatch for {target.release} ...")
    env = build.environment(cache, ws)
    built = livepatch.build_livepatch(
        ws, env, variants.smc_dir(prepared.variants.after), out_dir, functions,
        origin=f"Debian's {target.package_version} net/smc with our fix", jobs=request.jobs)
    if request.sign_key is not None and request.sign_cert is not None:
        signing.sign_module(ws, built.ko, request.sign_key, request.sign_cert, built.ko)
    result.signature = describe(module_signature(built.ko))
    result.built = True
    result.out_dir, result.module, result.source = out_dir, built.ko, built.source
    result.undefined, result.build_seconds = built.undefined, built.seconds
    result.judgement = judge_livepatch(built.ko, target.release, ws.symvers)
    result.message = (f"{built.ko.name}: {result.judgement.verdict}, replacing "
                      f"{', '.join(result.judgement.targets)}")
    if request.prove and result.judgement.verdict == "fixed":
        if ws.image_deb is None:
            raise BadInput(f"kernel {target.package_version}: no image package to boot: "
                           "--prove needs Debian's kernel image")
        display.say(f"livepatch proof: {target.release} under QEMU ...")
        result.proof = prove(cache, ws.image_deb, built.ko)
    result.total_seconds = time.monotonic() - started
    # the result beside the module: it marks the directory as ours (a later run may rewrite it)
    write_output(out_dir / MARKER, json.dumps(result.to_json(), indent=2) + "\n")
    _write_json(request, result)
    return result


def _prepare(cache: Cache, target: Target, options: Options, display: Display) -> Prepared:
    prepared = prepare(cache, [target], options, display)[0]
    if prepared.report.error or prepared.workspace is None:
        raise BadInput(f"kernel {prepared.label}: {prepared.report.error}")
    return prepared


def _write_json(request: LivepatchRequest, result: LivepatchResult) -> None:
    if request.json_path is not None:
        write_output(request.json_path, json.dumps(result.to_json(), indent=2) + "\n")
