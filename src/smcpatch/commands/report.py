"""`report --merge`: the JSON reports of several runs (one per CI job) as one, judged again."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput
from ..outputs import jsonreport
from ..pipeline.report import TargetReport
from . import exit_code, red_reasons


@dataclass
class MergeResult:
    reports: list[TargetReport]
    exit_code: int
    why: list[str] = field(default_factory=list)  # what made the exit red, kernel by kernel


def merge(directory: Path, json_out: Path | None,
          fail_on_vulnerable: bool = False) -> MergeResult:
    inputs = sorted(directory.glob("*.json"))
    if json_out is not None:
        _check_not_an_input(json_out, inputs)
    reports = jsonreport.merge(inputs)
    if json_out:
        jsonreport.write_json(json_out, jsonreport.document(reports), "--json")
    return MergeResult(reports, exit_code(reports, fail_on_vulnerable),
                       red_reasons(reports, fail_on_vulnerable))


def _check_not_an_input(output: Path, inputs: list[Path]) -> None:
    """The merged report replaces none of the reports it is made from."""
    try:
        out = os.stat(output)
    except OSError:
        return
    for path in inputs:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino):
            raise BadInput(f"--json {output} is {path}, one of the reports merged: write the "
                           "merged report elsewhere")
