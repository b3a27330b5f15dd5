"""`report --merge`: the JSON reports of several runs (one per CI job) as one."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ..pipeline import report
from . import EXIT_FAIL, EXIT_OK


def merge(directory: Path, json_out: Path | None) -> tuple[list[report.TargetReport], int]:
    if not directory.is_dir():
        raise BadInput(f"{directory}: not a directory of JSON reports")
    reports = report.merge(sorted(directory.glob("*.json")))
    if json_out:
        report.write_json(json_out, report.document(reports))
    return reports, EXIT_OK if all(r.ok for r in reports) else EXIT_FAIL
