"""The benchmark's inputs from the pipeline: the kernel image, the shipped module, ours.

`before` is Debian's shipped smc.ko (for a vulnerable kernel, the vulnerable code as users run
it), `after` our verified fixed build, and `canary` that fixed build with
bench/canary-prfx-match-delay.patch (a deliberate udelay(100) in smc_clc_prfx_match), which proves
the regression gate can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..data import CANARY_PATCH
from ..errors import BadInput, PatchError
from ..kernels.targets import Target
from ..pipeline import build
from ..pipeline import fetch as sources
from ..pipeline import flow as pipeline
from ..plumbing import hostpkg
from ..plumbing.apt import Apt
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_file, hash_inputs
from . import machine as vm

VARIANTS = ("after", "canary")


@dataclass
class BenchInputs:
    target: Target
    image_deb: Path
    before: Path  # Debian's shipped smc.ko(.xz)
    candidate: Path  # our after or canary smc.ko
    variant: str


def bench_inputs(cache: Cache, target: Target, variant: str) -> BenchInputs:
    if variant not in VARIANTS:
        raise BadInput(f"--variant {variant}: choose {' or '.join(VARIANTS)}")
    ws = sources.fetch(cache, target)
    # every host tool of the run (the guest's and the build's), in one install before any work
    hostpkg.ensure([*vm.host_tools(), *pipeline.host_tools(ws)], "benchmark tools")
    if ws.shipped_module is None:
        raise BadInput(f"kernel {target.version}: Debian ships no smc.ko for {target.release} "
                       "(SMC is off in its config): nothing to benchmark")
    report = pipeline.verify_target(cache, target, pipeline.Options(), workspace=ws)
    if not report.ok or report.after is None:
        raise BadInput(f"kernel {target.version}: the after-module is not verified "
                       f"({'; '.join(report.problems) or report.error}): not benchmarking it")
    if report.compile_only:
        raise BadInput(f"kernel {target.version}: compile-and-inspect only, cannot load")
    candidate = Path(report.after.path)
    if variant == "canary":
        candidate = build_canary(cache, ws)
    return BenchInputs(target=target, image_deb=image_deb(cache, ws), before=ws.shipped_module,
                       candidate=candidate, variant=variant)


def image_deb(cache: Cache, ws: sources.Workspace) -> Path:
    """The linux-image package to boot: the cached one, or downloaded again if it was removed."""
    if ws.image_deb is not None:
        return ws.image_deb
    apt = Apt(cache, suites=ws.target.apt_suites)
    apt.update()
    record = apt.show(ws.target.image_package, ws.target.package_version)
    if record is None:
        raise BadInput(f"{ws.target.image_package} {ws.target.package_version} is not in the "
                       "archive: no kernel image to boot")
    return apt.download([record], cache.dir("debs"))[0]


def build_canary(cache: Cache, ws: sources.Workspace) -> Path:
    """Our fixed sources plus the canary patch, built against the same kernel."""
    fixes = pipeline.Options().selected_fixes  # the default set, as verify_target used
    key = pipeline.variant_key(ws, fixes)
    after_src = pipeline.variants_dir(cache, ws, fixes) / "after" / "net" / "smc"
    canary_src = _canary_sources(cache, key, after_src)
    built = build.build_variants(cache, f"{key}__canary", ws.kdir, after_src, canary_src,
                                 env=pipeline.build_env(cache, ws))
    return built.after.ko


def _canary_sources(cache: Cache, key: str, after_src: Path) -> Path:
    return patched_copy(cache, f"{key}__canary", CANARY_PATCH, after_src, "the fixed sources")


def patched_copy(cache: Cache, entry_name: str, patch: Path, src: Path, what: str) -> Path:
    """A cached copy of the net/smc sources in `src` with one of our instrumentation patches
    applied (the benchmark's canary, the race's widening): made once per patch and source."""
    entry = cache.dir("variants", entry_name)
    inputs = hash_inputs(hash_file(patch), hash_file(src / "smc_clc.c"))
    with cache.lock(f"patched-{entry_name}"):
        if not entry_is_current(entry, inputs):
            with atomic_dir(entry, inputs) as tmp:
                shutil.copytree(src, tmp / "net" / "smc")
                proc = subprocess.run(["patch", "-p1", "--batch", "--forward", "--fuzz=0",
                                       "-d", str(tmp), "-i", str(patch)],
                                      capture_output=True, text=True, timeout=60, check=False,
                                      env={**os.environ, "LC_ALL": "C"})
                if proc.returncode != 0:
                    raise PatchError(f"{patch.name} does not apply to {what}: "
                                     f"{(proc.stdout.strip().splitlines() or ['?'])[-1]}")
    return entry / "net" / "smc"
