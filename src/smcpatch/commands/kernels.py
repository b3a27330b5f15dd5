"""`kernels` and `matrix`: the kernel matrix, as a list and as CI jobs."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import DEFAULT_MATRIX
from ..errors import BadInput
from ..stages import targets
from ..stages.targets import Target


def listing(flavour: str, matrix_path: Path | None = None) -> tuple[Path, list[Target]]:
    """The matrix file and its default targets in the flavour(s)."""
    path = matrix_path or DEFAULT_MATRIX
    return path, targets.select(targets.load_matrix(path), [], flavour)


def matrix_text(fmt: str, flavour: str, matrix_path: Path | None = None) -> str:
    """The default matrix as CI jobs."""
    jobs = [{"kernel": t.version, "flavour": t.flavour, "package_version": t.package_version,
             "release": t.release} for t in listing(flavour, matrix_path)[1]]
    if fmt == "github":
        return json.dumps({"include": jobs}, separators=(",", ":"))
    if fmt == "json":
        return json.dumps(jobs, indent=2)
    if fmt == "text":
        return "\n".join(f"inv verify --kernel {j['kernel']} --flavour {j['flavour']} "
                         f"--json report-{j['kernel']}-{j['flavour']}.json" for j in jobs)
    raise BadInput(f"unknown format {fmt!r}: choose github, json or text")
