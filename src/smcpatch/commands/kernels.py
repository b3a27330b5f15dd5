"""`kernels` and `matrix`: the kernel matrix (or every kernel of the archive), and CI jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data import DEFAULT_MATRIX
from ..errors import BadInput
from ..kernels import matrix, targets
from ..kernels.archive import Archive
from ..kernels.targets import Target
from ..kernels.versions import series_of, upstream_of
from ..plumbing.cache import Cache


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
        return "\n".join(f"inv verify --kernel {j['kernel']} --arch {j['arch']} --flavour "
                         f"{j['flavour']} --json report-{j['kernel']}-{j['flavour']}.json"
                         for j in jobs)
    raise BadInput(f"unknown format {fmt!r}: choose github, json or text")


@dataclass
class ArchiveKernel:
    version: str  # upstream
    package_version: str
    suite: str
    release: str  # as `uname -r` prints it ("" when the archive has no headers for it)
    arch: str
    state: str  # what the cache knows: Debian's module vulnerable / fixed, or "-" (not verified)
    verified: str  # our after-module's verdict from the cache, or "-"


def archive_listing(cache: Cache, flavour: str = "",
                    arches: list[str] | None = None) -> list[ArchiveKernel]:
    """Every kernel of every served suite, with its state where a verify run cached one, in
    the flavour(s) of each architecture asked for (the sources are arch-independent; whether
    that arch's headers are served shows when it is verified)."""
    flavours = targets.flavours_for(flavour, targets.check_arches(arches or [], flavour))
    archive = Archive(cache)
    archive.update()
    rows: list[ArchiveKernel] = []
    abis: dict[str, dict[str, str]] = {}
    for offer in archive.kernel_sources():
        upstream = upstream_of(offer.version)
        series = series_of(upstream)
        if series not in abis:
            abis[series] = archive.abis(series)
        abi = abis[series].get(offer.version, "")
        for each in flavours:
            state, verified = _cached_state(cache, f"{offer.version}_{each}")
            rows.append(ArchiveKernel(upstream, offer.version, offer.suite,
                                      f"{abi}-{each}" if abi else "", targets.arch_of(each),
                                      state, verified))
    return rows


def _cached_state(cache: Cache, key: str) -> tuple[str, str]:
    entry = cache.dir("inspect", key) / "inspect.json"
    try:
        data = json.loads(entry.read_text())
    except (OSError, ValueError):
        return "-", "-"
    shipped = (data.get("shipped") or {}).get("verdict", "-")
    after = (data.get("after") or {}).get("verdict", "-")
    return shipped, after
