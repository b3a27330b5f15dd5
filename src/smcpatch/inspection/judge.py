"""One module judged on its own, the same way for inspect, dkms --check and host:
the verdict and its evidence (and one verdict per fix of the series the module carries), the
appended signature, and, given the kernel, whether it would load (vermagic, modversions CRCs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InspectError
from .modcheck import check_modversions, check_vermagic, read_module_symvers
from .model import ModuleInfo, fix_verdict, worst
from .signature import describe, module_signature
from .verdict import inspect_module


@dataclass
class Judgement:
    """What one module says, as JSON-able facts."""

    module: str
    name: str
    vermagic: str | None
    srcversion: str | None
    has_dwarf: bool
    stripped: bool
    verdict: str
    reasons: list[str]
    evidence: dict[str, Any]
    signature: dict[str, Any] | None = None
    signature_text: str = "unsigned"
    vermagic_ok: bool | None = None  # given a kernel release
    vermagic_detail: str = ""
    modversions_ok: bool | None = None  # given the kernel's Module.symvers
    modversions_mismatches: list[str] = field(default_factory=list)
    # one verdict per fix of the series found in the module (verdict above: the first fix's)
    fixes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def worst_verdict(self) -> str:
        """The worst verdict over every fix (the exit code's): vulnerable, undecided, fixed."""
        verdicts = [str(f["verdict"]) for f in self.fixes] or [self.verdict]
        return fix_verdict(worst([self.verdict, *verdicts]))

    @property
    def loadable(self) -> bool:
        """No check that was made says the kernel would refuse it."""
        return self.vermagic_ok is not False and self.modversions_ok is not False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.vermagic_ok is None:
            del data["vermagic_ok"], data["vermagic_detail"]
        if self.modversions_ok is None:
            del data["modversions_ok"], data["modversions_mismatches"]
        return data


def judge(module: Path, release: str | None = None, symvers: Path | dict[str, int] | None = None,
          dwarf_object: Path | None = None) -> Judgement:
    """The verdict (inspection.verdict), the signature, and the load checks asked for."""
    info = inspect_module(module, dwarf_object=dwarf_object)
    result = Judgement(module=str(module), name=info.name, vermagic=info.vermagic,
                       srcversion=info.srcversion, has_dwarf=info.has_dwarf,
                       stripped=info.stripped, verdict=info.evidence.verdict,
                       reasons=list(info.evidence.reasons), evidence=evidence_json(info),
                       fixes=[fix.to_json() for fix in info.fixes])
    try:
        sig = module_signature(module)
        result.signature, result.signature_text = sig, describe(sig)
    except InspectError as exc:  # a damaged signature is reported, the verdict still stands
        result.signature, result.signature_text = None, f"malformed: {exc.one_line()}"
    if release:
        result.vermagic_ok, result.vermagic_detail = check_vermagic(info, release)
    if symvers is not None:
        crcs = symvers if isinstance(symvers, dict) else read_module_symvers(symvers)
        result.modversions_ok, result.modversions_mismatches = check_modversions(info, crcs)
    return result


def evidence_json(info: ModuleInfo) -> dict[str, Any]:
    """The verdict's evidence about the function, as JSON."""
    ev = info.evidence

    def sites(items: Any) -> list[dict[str, Any]]:
        return [{"fragment": s.fragment, "offset": s.offset, "target": s.target} for s in items]

    return {
        "function": ev.function,
        "fragments": dict(ev.fragments),
        "call_targets": sorted({s.target for s in ev.calls}),
        "rcu_read_lock_sites": sites(ev.rcu_lock_sites),
        "rcu_read_unlock_sites": sites(ev.rcu_unlock_sites),
        "dst_reference_sites": sites(ev.dst_ref_sites),
        "dwarf_inlined": ev.dwarf_inlined,
    }
