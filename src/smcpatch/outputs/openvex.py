"""OpenVEX 0.2.0 documents: what the binaries say about CVE-2025-40168, one statement per
product, for scanners and security teams (https://openvex.dev/ns/v0.2.0).

Products are Debian's packages (purl ``pkg:deb/debian/<package>@<version>?arch=<arch>``, the
package's SHA256) with their smc.ko as a subcomponent (purl subpath, the module's SHA256), and
verify's rebuilt after-modules (ours: `fixed`). Every statement names its evidence.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from .. import __version__
from ..pipeline.report import ModuleReport, TargetReport
from ..pipeline.scan import ScanRow
from .jsonreport import write_json
from .purl import purl as make_purl

CONTEXT = "https://openvex.dev/ns/v0.2.0"
CVE = "CVE-2025-40168"
VULNERABILITY = {
    "@id": f"https://www.cve.org/CVERecord?id={CVE}",
    "name": CVE,
    "description": "net/smc: smc_clc_prfx_match() reads dst->dev outside RCU after "
                   "sk_dst_get(), a use-after-free of the net_device (fixed upstream by "
                   "235f81045c00)",
}
ACTION = ("Upgrade to a Debian kernel whose linux-image carries the fix (linux 6.1.187-1 or "
          "later, 6.12.111-1 or later), or rebuild smc.ko with the RCU fix (smcpatch verify / "
          "smcpatch dkms) for this exact kernel.")
# what each verdict of the inspector means as a VEX status
STATUS = {"fixed": "fixed", "vulnerable": "affected", "unknown": "under_investigation",
          "not_affected": "not_affected"}


def _hashes(sha256: str) -> dict[str, str]:
    return {"sha-256": sha256} if sha256 else {}


def _product(package: str, version: str, arch: str, sha256: str, module_path: str = "",
             module_sha256: str = "") -> dict[str, Any]:
    purl = make_purl("debian", package, version, arch)
    product: dict[str, Any] = {"@id": purl, "identifiers": {"purl": purl}}
    if sha256:
        product["hashes"] = _hashes(sha256)
    if module_path:  # purl subpath: the file in the package
        sub = make_purl("debian", package, version, arch, module_path)
        product["subcomponents"] = [{"@id": sub, "hashes": _hashes(module_sha256)}]
    return product


def _statement(product: dict[str, Any], verdict: str, notes: str, timestamp: str,
               justification: str = "") -> dict[str, Any]:
    status = STATUS.get(verdict, "under_investigation")
    statement: dict[str, Any] = {"vulnerability": VULNERABILITY, "timestamp": timestamp,
                                 "products": [product], "status": status, "status_notes": notes}
    if status == "affected":
        statement["action_statement"] = ACTION
    if status == "not_affected":  # exactly one of justification / impact_statement
        statement["justification"] = justification or "vulnerable_code_not_present"
    return statement


def scan_statements(rows: list[ScanRow], timestamp: str) -> list[dict[str, Any]]:
    """One statement per scanned image (rows that failed carry no statement)."""
    out = []
    for row in rows:
        if row.error is not None:
            continue
        product = _product(row.package, row.version, row.arch, row.deb_sha256,
                           row.module_path, row.module_sha256)
        notes = (f"smcpatch inspected {row.module_path or 'the package'} of {row.package} "
                 f"{row.version} ({row.suite}): {row.evidence}. "
                 + _changelog_note(row) + " " + " ".join(row.reasons[-1:]))
        justification = "component_not_present" if row.verdict == "not_affected" else ""
        out.append(_statement(product, row.verdict, notes.strip(), timestamp, justification))
    return out


def _changelog_note(row: ScanRow) -> str:
    if row.changelog_fixed_in:
        return (f"Debian's changelog names {CVE} in {row.changelog_fixed_in} "
                f"({row.changelog}s with the binary).")
    return f"Debian's changelog of this package does not name {CVE}."


def verify_statements(reports: list[TargetReport], timestamp: str) -> list[dict[str, Any]]:
    """Per target: Debian's image (its shipped module judged) and our rebuilt after-module."""
    out = []
    for report in reports:
        if report.shipped is not None:
            image = f"linux-image-{report.release}"
            product = _product(image, report.package_version, report.arch, "",
                               _module_subpath(report.release, report.shipped),
                               _file_sha256(report.shipped.path))
            out.append(_statement(product, report.shipped.verdict,
                                  f"Debian's shipped smc.ko of {image} {report.package_version}: "
                                  + _reason(report.shipped), timestamp))
        if report.after is not None and report.ok:
            purl = make_purl("smcpatch", "smc.ko", report.release, report.arch)
            product = {"@id": purl, "identifiers": {"purl": purl},
                       "hashes": _hashes(_file_sha256(report.after.path))}
            out.append(_statement(product, report.after.verdict,
                                  f"smc.ko rebuilt by smcpatch {__version__} with the RCU fix for "
                                  f"{report.release} ({report.package_version}), all checks "
                                  "passed (vermagic, modversions, only the patched function "
                                  "changed): " + _reason(report.after), timestamp))
    return out


def _module_subpath(release: str, module: ModuleReport) -> str:
    name = Path(module.path).name
    return f"lib/modules/{release}/kernel/net/smc/{name}"


def _reason(module: ModuleReport) -> str:
    return module.reasons[-1] if module.reasons else module.verdict


def _file_sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def document(statements: list[dict[str, Any]], timestamp: str) -> dict[str, Any]:
    """The OpenVEX document; its @id is derived from its statements (the same facts give the
    same id)."""
    digest = hashlib.sha256(json.dumps(statements, sort_keys=True).encode()).hexdigest()
    return {
        "@context": CONTEXT,
        "@id": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, CONTEXT + '/' + digest)}",
        "author": "smcpatch (automated binary analysis)",
        "role": "tool",
        "timestamp": timestamp,
        "version": 1,
        "tooling": f"smcpatch {__version__}",
        "statements": statements,
    }


def write(path: Path, statements: list[dict[str, Any]], timestamp: str) -> None:
    write_json(path, document(statements, timestamp))
