"""`kernels` and `matrix`: the kernel matrix (or every kernel of the archive), and CI jobs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import inspection
from ..data import DEFAULT_MATRIX
from ..errors import BadInput, SmcpatchError
from ..kernels import matrix, targets
from ..kernels.archive import Archive
from ..kernels.targets import Target
from ..kernels.versions import upstream_of
from ..outputs.text import command, visible
from ..plumbing.cache import Cache
from ..plumbing.progress import Progress, silent


def listing(flavour: str, matrix_path: Path | None = None,
            arches: list[str] | None = None) -> tuple[Path, list[Target]]:
    """The matrix file and its default targets in the flavour(s) of each architecture."""
    path = matrix_path or DEFAULT_MATRIX
    return path, matrix.select(matrix.load_matrix(path), [], flavour,
                               targets.check_arches(arches or [], flavour))


def matrix_text(fmt: str, flavour: str, matrix_path: Path | None = None,
                arches: list[str] | None = None) -> str:
    """The default matrix as CI jobs."""
    jobs = [{"kernel": t.version, "arch": t.arch, "flavour": t.flavour,
             "package_version": t.package_version, "release": t.release}
            for t in listing(flavour, matrix_path, arches)[1]]
    if fmt == "github":
        return json.dumps({"include": jobs}, separators=(",", ":"))
    if fmt == "json":
        return json.dumps(jobs, indent=2)
    if fmt == "text":
        return "\n".join(_job_line(j) for j in jobs)
    raise BadInput(f"unknown format {fmt!r}: choose github, json or text")


def _job_line(job: dict[str, str]) -> str:
    """One command to copy and run: every value from the matrix one shell word (shlex), and a
    value no shell line could show as text (a control character, a newline) refused."""
    for key in ("kernel", "arch", "flavour"):
        if visible(job[key]) != job[key]:
            raise BadInput(f"matrix entry {key} {visible(job[key])}: not a kernel version "
                           "(control characters)")
    return command("verify", "--kernel", job["kernel"], "--arch", job["arch"], "--flavour",
                   job["flavour"], "--json", f"report-{job['kernel']}-{job['flavour']}.json")


@dataclass
class ArchiveKernel:
    version: str  # upstream
    package_version: str
    suite: str
    release: str  # as `uname -r` prints it
    arch: str
    state: str  # what the cache knows of Debian's module (a verify or a scan), or "-"
    verified: str  # our after-module's verdict from the cache, or "-"
    can: str  # build (sources and headers served) | judge (only the image is served)


def archive_listing(cache: Cache, flavour: str = "", arches: list[str] | None = None,
                    progress: Progress = silent) -> list[ArchiveKernel]:
    """Every kernel any served suite has an image of, in the flavour(s) asked for: whether it
    can be built (its sources and headers are served) or only judged, and what an earlier
    verify or scan found."""
    flavours = targets.flavours_for(flavour, targets.check_arches(arches or [], flavour))
    archive = Archive(cache)
    progress("the archive's package lists (once a day)")
    archive.update()
    progress("every kernel image of every suite")
    sources = {o.version for o in archive.kernel_sources()}
    scanned = _scanned(cache)
    rows: list[ArchiveKernel] = []
    for offer in archive.images():
        release = offer.name.removeprefix("linux-image-")
        each = next((f for f in flavours if release.endswith(f"-{f}")
                     and not release.endswith(f"-cloud-{f}") and not release.endswith(f"-rt-{f}")),
                    None)
        if each is None:
            continue
        state, verified = _cached_state(cache, f"{offer.version}_{each}")
        if state == "-":
            state = scanned.get((offer.name, offer.version), "-")
        rows.append(ArchiveKernel(upstream_of(offer.version), offer.version, offer.suite,
                                  release, targets.arch_of(each), state, verified,
                                  "build" if offer.version in sources else "judge"))
    return sorted(rows, key=lambda r: (_version_key(r.package_version), r.suite, r.release))


def _version_key(version: str) -> tuple[object, ...]:
    return tuple(int(n) if n.isdigit() else n for n in re.split(r"(\d+)", version))


def _scanned(cache: Cache) -> dict[tuple[str, str], str]:
    """(package, version) -> verdict of every image an earlier scan judged."""
    found: dict[tuple[str, str], str] = {}
    for path in cache.dir("scan").glob("*.json"):
        try:
            data = json.loads(path.read_text())
            found[(str(data["package"]), str(data["version"]))] = str(data["verdict"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _cached_state(cache: Cache, key: str) -> tuple[str, str]:
    """(Debian's module, our after-module) as a verify left them; a kernel only judged has its
    shipped module in the cache, judged here (tens of milliseconds)."""
    entry = cache.dir("inspect", key) / "inspect.json"
    try:
        data = json.loads(entry.read_text())
        shipped = (data.get("shipped") or {}).get("verdict", "-")
        after = (data.get("after") or {}).get("verdict", "-")
    except (OSError, ValueError, AttributeError):
        modules = sorted(cache.dir("shipped", key).glob("smc.ko*"))
        if not modules:
            return "-", "-"
        try:
            return inspection.inspect_module(modules[0]).evidence.verdict, "-"
        except SmcpatchError:
            return "-", "-"
    return str(shipped), str(after)
