"""`scan`: every published Debian kernel image of some suites, judged from its own smc.ko."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..errors import BadInput
from ..kernels import targets
from ..outputs import junit, vex
from ..outputs.jsonreport import scan_document, write_json
from ..pipeline import fetch as sources
from ..pipeline import scan
from ..plumbing import hostpkg
from ..plumbing.apt import Apt
from ..plumbing.cache import Cache
from ..plumbing.progress import QUIET, Display
from ..plumbing.suites import host_releases, served_suites
from . import EXIT_FAIL, EXIT_OK


@dataclass
class ScanRequest:
    suites: list[str] = field(default_factory=list)  # default: the host's release + -security
    arches: list[str] = field(default_factory=list)
    flavour: str = "all"
    cache_dir: Path | None = None
    json_path: Path | None = None
    vex: vex.VexOutput | None = None  # --vex, --vex-format: one document per format
    junit_path: Path | None = None
    parallel: int = 4


@dataclass
class ScanResult:
    rows: list[scan.ScanRow]
    suites: tuple[str, ...]
    seconds: float
    exit_code: int

    @property
    def downloaded_bytes(self) -> int:
        return sum(r.downloaded_bytes for r in self.rows)


def default_suites() -> list[str]:
    """The host's own release and its security suite (bookworm, bookworm-security here)."""
    return [s for release in sorted(host_releases()) for s in (release, f"{release}-security")]


def check_request(request: ScanRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(suites, arches) as asked, refused when they cannot be meant (before any download)."""
    arches = targets.check_arches(request.arches, request.flavour)
    targets.flavours_for(request.flavour, arches)
    suites = tuple(dict.fromkeys(request.suites or default_suites()))
    if any(not re.fullmatch(r"[a-z][a-z0-9.-]*", s) for s in suites):
        raise BadInput(f"not a suite name: {', '.join(suites)}")
    return suites, arches


def run(request: ScanRequest, display: Display = QUIET) -> ScanResult:
    started = time.monotonic()
    suites, arches = check_request(request)
    flavours = targets.flavours_for(request.flavour, arches)
    cache = Cache.open(request.cache_dir)
    served = served_suites(cache)
    unknown = [s for s in suites if s not in served]
    if unknown:
        raise BadInput(f"{', '.join(unknown)}: not a suite the host's mirrors serve "
                       f"({', '.join(served)})")
    hostpkg.ensure(sources.TOOLS, "fetch tools", say=display.say)
    apt = Apt(cache, suites=suites,
              foreign_arches=tuple(a for a in arches if a != targets.HOST_ARCH))
    progress = display.reporter("scan")
    progress("apt index")
    apt.update()
    images = scan.list_images(apt, suites, arches, flavours)
    if not images:
        raise BadInput(f"no linux-image packages of {', '.join(flavours)} in "
                       f"{', '.join(suites)} ({', '.join(arches)}): is the suite served?")
    rows = scan.scan_all(cache, apt, images, request.parallel, progress)
    generated = datetime.now(UTC).replace(microsecond=0)
    if request.json_path:
        write_json(request.json_path, scan_document(rows, suites, arches,
                                                    generated.strftime("%Y-%m-%dT%H:%M:%SZ")))
    if request.vex:
        from ..outputs import products

        vex.write(request.vex, products.from_scan(rows), generated)
    if request.junit_path:
        junit.write(request.junit_path, junit.scan_suite(rows))
    # the scan's own failure: an image it could not judge, or a changelog the binary contradicts
    failed = any(r.error or r.verdict == "unknown" or r.changelog == "disagree" for r in rows)
    return ScanResult(rows, suites, time.monotonic() - started, EXIT_FAIL if failed else EXIT_OK)
