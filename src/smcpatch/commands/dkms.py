"""`dkms`: a DKMS source package of the fixed SMC module for one kernel, optionally built with
Debian's dkms against the extracted headers and inspected."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .. import inspection
from ..errors import BadInput
from ..kernels import targets
from ..packaging import signing
from ..packaging.dkms import (
    PACKAGE_NAME,
    TOOLS,
    build_package,
    package_version,
    release_regex,
    write_package,
)
from ..pipeline import build
from ..pipeline import classify as patching
from ..pipeline import fetch as sources
from ..pipeline import flow as pipeline
from ..plumbing import hostpkg
from ..plumbing.cache import Cache
from ..plumbing.progress import Progress, silent


def run(cache: Cache, kernel: str, out_dir: Path, flavour: str = "",
        fixes: list[str] | None = None, check: bool = False, jobs: int | None = None,
        sign_key: Path | None = None, sign_cert: Path | None = None,
        progress: Progress = silent, patches_dir: Path | None = None,
        matrix_path: Path | None = None, suite: str | None = None,
        arch: str = "") -> dict[str, Any]:
    """Fetch, classify, write the package; with ``check``, dkms-build it and inspect the result.

    Returns a JSON-able summary. The check builds in a temp dir under the cache (removed after).
    """
    if (sign_key is None) != (sign_cert is None):
        raise BadInput("signing needs both --sign-key and --sign-cert")
    if sign_key is not None and sign_cert is not None:
        if not check:
            raise BadInput("--sign-key/--sign-cert sign the module dkms builds: add --check")
        signing.check_key_matches_cert(sign_key, sign_cert)
    series = patches_dir or pipeline.PATCHES_DIR
    selected = pipeline.select_fixes(patching.load_series(series, "all"),
                                     fixes or ["default"])  # a bad --fix: before any download
    arches = targets.check_arches([arch] if arch else [], flavour)
    target = targets.resolve(cache, [kernel], flavour, matrix_path=matrix_path, suite=suite,
                             arches=arches)[0]
    if check and target.foreign:
        raise BadInput(f"--check runs dkms on this {targets.HOST_ARCH} host, and dkms builds for "
                       f"the machine it runs on: check the {target.arch} package on an "
                       f"{target.arch} system (`inv verify --arch {target.arch}` cross-builds "
                       "and inspects the same fix here)")
    if check and target.build_env:
        raise BadInput(f"--check runs dkms with this host's compiler, but {target.version} is "
                       f"built with {target.compiler} of {target.build_env}: write the package "
                       f"without --check and build it on a {target.build_env} system")
    ws = sources.fetch(cache, target, progress)
    if check:  # every host tool of the check, in one install
        config = build.KernelConfig.read(ws.kdir / ".config")
        hostpkg.ensure([*TOOLS, *build.toolchain_tools(config)], "dkms and build tools")
    progress("classify")
    states = patching.classify(ws.source_tree, selected)
    progress("write package")
    package = write_package(ws, states, out_dir)
    summary: dict[str, Any] = {
        "package": str(package), "name": PACKAGE_NAME, "version": package_version(ws),
        "kernel": target.package_version, "release_regex": release_regex(ws),
        "fixes": [{"id": s.fix_id, "state": s.state, "variant": s.variant.name,
                   "patch": s.variant.path.name if s.state == "vulnerable" else None}
                  for s in states],
        "check": None,
    }
    if check:
        progress("dkms build")
        tmp_root = cache.dir("tmp")
        tmp_root.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dkms-check-", dir=tmp_root) as tmp:
            built = build_package(ws, package, Path(tmp) / "work", jobs, sign_key, sign_cert)
            info = inspection.inspect_module(built.smc)
            sig = signing.module_signature(built.smc)
            summary["check"] = {
                "release": built.release, "dkms": built.dkms_version,
                "seconds": round(built.seconds, 1), "patches_applied": built.patches_applied,
                "verdict": info.evidence.verdict, "reasons": info.evidence.reasons,
                "vermagic_ok": inspection.check_vermagic(info, built.release)[0],
                "modversions_ok": inspection.check_modversions(
                    info, inspection.read_module_symvers(ws.symvers))[0],
                "changed_vs_shipped": (inspection.changed_functions(ws.shipped_module, built.smc)
                                       if ws.shipped_module else None),
                "signature": sig, "signature_text": signing.describe(sig),
            }
    return summary
