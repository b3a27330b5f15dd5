"""`inspect`: the verdict and its evidence for any smc.ko / .ko.xz / .ko.zst / smc_clc.o."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import inspection
from ..errors import BadInput, InspectError
from ..packaging import signing
from ..pipeline import report
from . import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK


def run(module: Path, release: str | None = None,
        symvers: Path | None = None) -> tuple[dict[str, Any], int]:
    """(JSON-able result, exit code): 0 fixed, 1 vulnerable or a failed check, 2 unknown."""
    if not module.exists():
        raise BadInput(f"{module}: no such file")
    info = inspection.inspect_module(module)
    data: dict[str, Any] = {
        "module": str(module), "name": info.name, "vermagic": info.vermagic,
        "srcversion": info.srcversion, "has_dwarf": info.has_dwarf, "stripped": info.stripped,
        "verdict": info.evidence.verdict, "reasons": info.evidence.reasons,
        "evidence": report.evidence_json(info),
    }
    try:
        sig = signing.module_signature(module)
        data["signature"], data["signature_text"] = sig, signing.describe(sig)
    except InspectError as exc:  # a damaged signature is reported, the verdict still stands
        data["signature"], data["signature_text"] = None, f"malformed: {exc.one_line()}"
    if release:
        data["vermagic_ok"], data["vermagic_detail"] = inspection.check_vermagic(info, release)
    if symvers:
        ok, mismatches = inspection.check_modversions(info, inspection.read_module_symvers(symvers))
        data["modversions_ok"], data["modversions_mismatches"] = ok, mismatches
    code = {"fixed": EXIT_OK, "vulnerable": EXIT_FAIL}.get(info.evidence.verdict, EXIT_BAD_INPUT)
    if data.get("vermagic_ok") is False or data.get("modversions_ok") is False:
        code = max(code, EXIT_FAIL)
    return data, code
