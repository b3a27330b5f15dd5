"""OpenVEX 0.2.0 (https://openvex.dev/ns/v0.2.0) over the product model: one statement per
product and CVE of the series (each names its own vulnerability). A product is its purl (and
SHA256); the module judged in a Debian package (smc.ko; tls.ko for CVE-2025-40149) is a
subcomponent (the package's purl with the module's path as subpath, its SHA256). status_notes
carry the evidence; an affected product gets an action statement (upgrade, else the rebuilt
module), a not_affected one its justification.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ..cve import vulnerability
from .products import ProductStatement, Status, VexDocument

NAME = "openvex"
SUFFIX = ".openvex.json"
CONTEXT = "https://openvex.dev/ns/v0.2.0"


def _vulnerability(cve: str) -> dict[str, str]:
    return {"@id": f"https://www.cve.org/CVERecord?id={cve}", "name": cve,
            "description": vulnerability(cve).description}


def _product(s: ProductStatement) -> dict[str, Any]:
    product: dict[str, Any] = {"@id": s.purl, "identifiers": {"purl": s.purl}}
    if s.file is not None:
        product["hashes"] = {"sha-256": s.file.sha256}
    if s.module is not None:
        product["subcomponents"] = [{"@id": s.module_purl,
                                     "hashes": {"sha-256": s.module.sha256}}]
    return product


def _statement(s: ProductStatement, timestamp: str) -> dict[str, Any]:
    out: dict[str, Any] = {"vulnerability": _vulnerability(s.cve), "timestamp": timestamp,
                           "products": [_product(s)], "status": s.status.value,
                           "status_notes": s.evidence}
    if s.status in (Status.AFFECTED, Status.UNDER_INVESTIGATION) and s.advice:
        out["action_statement"] = s.advice
    if s.justification is not None:  # the schema: a justification or an impact statement
        out["justification"] = s.justification.value
    return out


def build(doc: VexDocument) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "@id": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, CONTEXT + '/' + doc.digest)}",
        "author": doc.publisher.name,
        "role": "tool",
        "timestamp": doc.timestamp,
        "version": 1,
        "tooling": f"smcpatch {doc.tool_version}",
        "statements": [_statement(s, doc.timestamp) for s in doc.statements],
    }


def render(doc: VexDocument) -> str:
    return json.dumps(build(doc), indent=2, allow_nan=False) + "\n"
