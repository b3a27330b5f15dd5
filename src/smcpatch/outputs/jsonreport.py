"""The JSON files smcpatch writes for machines: the verify report (schema smcpatch-report/1, a
list of TargetReport.to_json() objects), its merge (report --merge), the scan's results (schema
smcpatch-scan/1, one ScanRow per image with its purl), and the one writer every JSON output goes
through (plumbing.files.write_output: a regular file replaced atomically, a
device or pipe written through)."""

from __future__ import annotations

import json
import math
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


def write_json(path: Path, data: dict[str, Any], option: str = "") -> None:
    """JSON as the standard has it: NaN and Infinity are not JSON, never written."""
    write_output(path, json.dumps(data, indent=2, allow_nan=False) + "\n", option)


# -- report --merge: every report read is judged; none is dropped --------------------------------
def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def read_report(path: Path) -> list[TargetReport]:
    """One verify report's targets, each judged again from its own fields. Anything that is not
    such a report is bad input naming the file: not JSON, NaN or 1e400, nesting too deep,
    a field or a list element of the wrong type."""
    try:
        data = json.loads(read_input_text(path, "JSON report", REPORT_LIMIT),
                          parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadInput(f"{path}: not a readable JSON report (nested too deeply)") from None
    except ValueError as exc:
        raise BadInput(f"{path}: not a readable JSON report ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BadInput(f"{path}: not an smcpatch report (schema {SCHEMA} expected)")
    targets = data.get("targets")
    if not isinstance(targets, list):
        raise BadInput(f"{path}: malformed report: `targets` is not a list")
    out = []
    for entry in targets:
        try:
            _check_shape(entry)
            out.append(TargetReport.from_json(entry))
        except BadInput as exc:
            raise BadInput(f"{path}: malformed report entry: {exc.one_line()}") from None
    return out


def _check_shape(entry: Any) -> None:
    """What TargetReport.from_json does not look into: the elements of its lists and dicts."""
    if not isinstance(entry, dict):
        return  # from_json says so
    for name, kind in _TARGET_SHAPE.items():
        if entry.get(name) is not None:
            _check_elements(name, entry[name], kind)
    for side in ("before", "after", "shipped"):
        module = entry.get(side)
        if isinstance(module, dict) and module.get("reasons") is not None:
            _check_elements(f"{side}.reasons", module["reasons"], "strs")
    for sibling in entry.get("sibling_verdicts") or []:
        missing = [k for k in ("fix", "function", "before", "after") if k not in sibling]
        if missing:
            raise BadInput(f"report field sibling_verdicts: an entry lacks {', '.join(missing)}")


# a TargetReport's containers and what they hold (pipeline/report.py's annotations)
_TARGET_SHAPE = {
    "fixes": "str-dicts", "sibling_verdicts": "str-dicts",
    "modversions_mismatches": "strs", "changed_functions": "strs",
    "expected_changed_functions": "strs", "layout_only_functions": "strs",
    "inlined_patched_functions": "strs", "recompiled_for_after": "strs", "notes": "strs",
    "problems": "strs", "timings": "numbers", "timings_detail": "numbers",
    "from_cache": "bools",
}


def _check_elements(name: str, value: Any, kind: str) -> None:
    if kind in ("strs", "str-dicts"):
        if not isinstance(value, list):
            raise BadInput(f"report field {name}: {type(value).__name__} where a list belongs")
        items = value
    else:
        if not isinstance(value, dict):
            raise BadInput(f"report field {name}: {type(value).__name__} where an object "
                           "belongs")
        items = list(value.values())
    for item in items:
        if kind == "str-dicts":
            ok = isinstance(item, dict) and all(isinstance(v, str) for v in item.values())
        elif kind == "strs":
            ok = isinstance(item, str)
        elif kind == "bools":
            ok = isinstance(item, bool)
        else:
            ok = isinstance(item, int | float) and not isinstance(item, bool)
        if not ok:
            raise BadInput(f"report field {name}: an element {type(item).__name__} where "
                           f"{_KIND_WORDS[kind]} belong")


_KIND_WORDS = {"strs": "strings", "str-dicts": "objects of strings", "bools": "true/false values",
               "numbers": "numbers"}


def _worse(a: TargetReport, b: TargetReport) -> bool:
    """Whether a says less in the kernel's favour than b: not verified before verified, then
    Debian's module not fixed before fixed."""
    def rank(r: TargetReport) -> tuple[bool, bool]:
        return (r.ok, r.shipped_state == "fixed")
    return rank(a) < rank(b)


def merge(paths: list[Path]) -> list[TargetReport]:
    """The targets of several JSON reports (e.g. one per CI job), each judged again from its own
    fields by the rule verify uses. A kernel in more than one report: every report of it is
    judged and the worse one stands (a failure is never hidden by a later pass), with a note
    naming the files; none is dropped unsaid."""
    merged: dict[tuple[str, str], tuple[TargetReport, Path]] = {}
    seen: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(paths):
        for target in read_report(path):
            key = (target.package_version, target.flavour)
            seen.setdefault(key, []).append(path)
            if key not in merged or _worse(target, merged[key][0]):
                merged[key] = (target, path)
    if not merged:
        raise BadInput("no report targets found to merge")
    out = []
    for key, (target, path) in merged.items():
        if len(seen[key]) > 1:
            names = ", ".join(p.name for p in seen[key])
            target.notes.append(f"in {len(seen[key])} reports ({names}): each judged, the worst "
                                f"stands ({path.name}'s)")
        out.append(target)
    return out
