"""The JSON files smcpatch writes for machines: the verify report (schema smcpatch-report/1, a
list of TargetReport.to_json() objects), its merge (report --merge), the scan's results (schema
smcpatch-scan/1, one ScanRow per image with its purl), and the one writer every JSON output goes
through (plumbing.files.write_output: a regular file replaced atomically, a
device or pipe written through)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import BadInput
from ..pipeline.report import TargetReport
from ..plumbing.files import read_input_text, write_output
from .purl import purl

if TYPE_CHECKING:  # annotations only: writing needs neither stage imported
    from ..pipeline.scan import ScanRow

SCHEMA = "smcpatch-report/1"
SCAN_SCHEMA = "smcpatch-scan/1"
REPORT_LIMIT = 64 * 1024 * 1024  # a report of thousands of targets is a few MB


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def document(reports: list[TargetReport]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "tool_version": __version__,
        "generated": now(),
        "ok": bool(reports) and all(r.ok for r in reports),
        "targets": [r.to_json() for r in reports],
    }


def scan_document(rows: list[ScanRow], suites: tuple[str, ...], arches: tuple[str, ...],
                  generated: str) -> dict[str, Any]:
    return {"schema": SCAN_SCHEMA, "tool_version": __version__, "generated": generated,
            "suites": list(suites), "arches": list(arches),
            "images": [{**r.to_json(), "purl": purl("debian", r.package, r.version, r.arch)}
                       for r in rows]}


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_output(path, json.dumps(data, indent=2) + "\n")


def merge(paths: list[Path]) -> list[TargetReport]:
    """The targets of several JSON reports (e.g. one per CI job), each judged again from its own
    fields by the rule verify uses. A target present in more than one report keeps the last one
    read (files sorted by name)."""
    merged: dict[tuple[str, str], TargetReport] = {}
    for path in sorted(paths):
        try:
            data = json.loads(read_input_text(path, "JSON report", REPORT_LIMIT))
        except ValueError as exc:
            raise BadInput(f"{path}: not a readable JSON report ({exc})") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise BadInput(f"{path}: not an smcpatch report (schema {SCHEMA} expected)")
        targets = data.get("targets")
        if not isinstance(targets, list):
            raise BadInput(f"{path}: malformed report: `targets` is not a list")
        for entry in targets:
            try:
                target = TargetReport.from_json(entry)
            except BadInput as exc:
                raise BadInput(f"{path}: malformed report entry: {exc.one_line()}") from None
            merged[(target.package_version, target.flavour)] = target
    if not merged:
        raise BadInput("no report targets found to merge")
    return list(merged.values())
