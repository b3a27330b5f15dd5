"""`inspect`: the verdict and its evidence for any smc.ko / tls.ko / .ko.xz / .ko.zst /
smc_clc.o, one verdict per fix of the series the module carries; the exit code is the worst."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, inspection
from ..inspection.judge import Judgement
from . import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK, EXIT_WOULD_NOT_LOAD

SCHEMA = "smcpatch-inspect/1"
# what an input can be at most (read no more): a module is megabytes, a Module.symvers less
MODULE_LIMIT = 256 * 1024 * 1024
SYMVERS_LIMIT = 64 * 1024 * 1024


@dataclass
class InspectResult:
    judgement: Judgement
    exit_code: int  # the worst fix: 0 fixed, 1 vulnerable, 2 undecided, 4 fixed but refused
    why: str = ""  # one line: why the exit code is not the verdict's

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tool_version": __version__, **self.judgement.to_json()}


def run(module: Path, release: str | None = None, symvers: Path | None = None) -> InspectResult:
    """The module judged, every fix it carries; vermagic and modversions checked when the
    kernel is named."""
    judgement = inspection.judge(module, release, symvers)
    code = {"fixed": EXIT_OK, "vulnerable": EXIT_FAIL}.get(judgement.worst_verdict,
                                                          EXIT_BAD_INPUT)
    if code == EXIT_OK and not judgement.loadable:  # fixed, but not for that kernel
        refused = [judgement.vermagic_detail] if judgement.vermagic_ok is False else []
        if judgement.modversions_ok is False:
            refused.append("modversions: " + ", ".join(judgement.modversions_mismatches[:3]))
        return InspectResult(judgement, EXIT_WOULD_NOT_LOAD,
                             "fixed, but the kernel would refuse it: " + "; ".join(refused))
    return InspectResult(judgement, code)
