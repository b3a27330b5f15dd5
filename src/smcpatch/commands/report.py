"""`report --merge`: the JSON reports of several runs (one per CI job) as one, judged again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..outputs import jsonreport
from ..pipeline.report import TargetReport
from . import exit_code


@dataclass
class MergeResult:
    reports: list[TargetReport]
    exit_code: int


def merge(directory: Path, json_out: Path | None,
          fail_on_vulnerable: bool = False) -> MergeResult:
    reports = jsonreport.merge(sorted(directory.glob("*.json")))
    if json_out:
        jsonreport.write_json(json_out, jsonreport.document(reports))
    return MergeResult(reports, exit_code(reports, fail_on_vulnerable))
