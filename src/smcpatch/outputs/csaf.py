"""CSAF 2.0 with the VEX profile (csaf_vex, CSAF 2.0 section 4.5) over the product model.

Product tree: vendor (Debian, or smcpatch for its rebuilt modules) -> product_name (the package,
or smc.ko) -> product_version (the Debian version, or the kernel release a module was rebuilt
for) -> architecture, whose product carries the purl and the hashes of the package and of its
smc.ko. One vulnerability: the CVE with its CWE, a note with each product's evidence, the four
product_status lists, a flag per known_not_affected product (its justification), an impact
threat and remediations per known_affected one (vendor_fix: Debian's fixed version; workaround:
a rebuilt module or keeping smc unloaded).

The publisher is category "other": smcpatch is neither the vendor (Debian), nor the finder of the
CVE, nor its coordinator, but a third party that analyses others' products (and for rebuilt
modules, republishes one). Its namespace is overridable (outputs.products.Publisher).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from ..cve import CVE, CWE, CWE_NAME, DESCRIPTION, TITLE
from .products import ProductStatement, Status, VexDocument

NAME = "csaf"
SUFFIX = ".csaf.json"
PRODUCT_STATUS = {Status.FIXED: "fixed", Status.AFFECTED: "known_affected",
                  Status.NOT_AFFECTED: "known_not_affected",
                  Status.UNDER_INVESTIGATION: "under_investigation"}
REFERENCES = [{"category": "external", "summary": f"{CVE} (CVE record)",
               "url": f"https://www.cve.org/CVERecord?id={CVE}"},
              {"category": "external", "summary": f"{CVE} (NVD)",
               "url": f"https://nvd.nist.gov/vuln/detail/{CVE}"}]


def _full_product_name(s: ProductStatement) -> dict[str, Any]:
    hashes = [{"file_hashes": [{"algorithm": "sha256", "value": f.sha256}], "filename": f.path}
              for f in (s.file, s.module) if f is not None]
    helper: dict[str, Any] = {"purl": s.purl}
    if hashes:
        helper["hashes"] = hashes
    return {"name": s.title, "product_id": s.product_id, "product_identification_helper": helper}


def _product_tree(doc: VexDocument) -> dict[str, Any]:
    tree: dict[str, dict[str, dict[str, list[ProductStatement]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for s in doc.statements:
        tree[s.title.split(" ", 1)[0]][s.name][s.version].append(s)
    return {"branches": [
        {"category": "vendor", "name": vendor, "branches": [
            {"category": "product_name", "name": name, "branches": [
                {"category": "product_version", "name": version, "branches": [
                    {"category": "architecture", "name": s.arch,
                     "product": _full_product_name(s)} for s in leaves]}
                for version, leaves in versions.items()]}
            for name, versions in names.items()]}
        for vendor, names in tree.items()]}


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """text -> the product ids it is said of, in first-seen order."""
    out: dict[str, list[str]] = defaultdict(list)
    for text, product_id in pairs:
        out[text].append(product_id)
    return out


def _vulnerability(doc: VexDocument) -> dict[str, Any]:
    status: dict[str, list[str]] = defaultdict(list)
    for s in doc.statements:
        status[PRODUCT_STATUS[s.status]].append(s.product_id)
    notes = [{"category": "description", "title": "Vulnerability description",
              "text": DESCRIPTION}]
    for s in doc.statements:
        undecided = s.action if s.status is Status.UNDER_INVESTIGATION and s.action else ""
        notes.append({"category": "details", "title": f"Binary evidence: {s.title}",
                      "text": f"{s.evidence} {undecided}".strip()})
    vuln: dict[str, Any] = {"cve": CVE, "cwe": {"id": CWE, "name": CWE_NAME}, "title": TITLE,
                            "notes": notes, "references": REFERENCES,
                            "product_status": dict(status)}
    flags = _grouped([(s.justification.value, s.product_id)
                      for s in doc.with_status(Status.NOT_AFFECTED) if s.justification])
    if flags:
        vuln["flags"] = [{"label": label, "product_ids": ids} for label, ids in flags.items()]
    affected = doc.with_status(Status.AFFECTED)
    if affected:
        vuln["threats"] = [{"category": "impact", "details": s.evidence,
                            "product_ids": [s.product_id]} for s in affected]
    # the upgrade settles an undecided product too; a workaround is for affected ones
    fixes = _grouped([(s.upgrade, s.product_id) for s in doc.statements if s.upgrade])
    workarounds = _grouped([(s.action, s.product_id) for s in affected if s.action])
    remediations = ([{"category": "vendor_fix", "details": text, "product_ids": ids}
                     for text, ids in fixes.items()]
                    + [{"category": "workaround", "details": text, "product_ids": ids}
                       for text, ids in workarounds.items()])
    if remediations:
        vuln["remediations"] = remediations
    return vuln


def build(doc: VexDocument) -> dict[str, Any]:
    when = doc.timestamp
    return {
        "document": {
            "category": "csaf_vex",
            "csaf_version": "2.0",
            "lang": "en",
            "title": f"{TITLE}: smcpatch's binary analysis of Debian kernel packages",
            # every fact here comes from packages Debian publishes (CSAF 2.0 has TLP v1 labels)
            "distribution": {"tlp": {"label": "WHITE"}},
            "publisher": {"category": "other", "name": doc.publisher.name,
                          "namespace": doc.publisher.namespace},
            "notes": [{"category": "summary", "title": "What this document is",
                       "text": f"Generated by smcpatch {doc.tool_version} from the binaries "
                               f"themselves: each product's smc.ko was inspected for the fix of "
                               f"{CVE}; the evidence is given per product."}],
            "tracking": {
                "id": doc.tracking_id,
                "status": "final",
                "version": "1",
                "initial_release_date": when,
                "current_release_date": when,
                "revision_history": [{"date": when, "number": "1",
                                      "summary": "Generated from the binaries."}],
                "generator": {"date": when,
                              "engine": {"name": "smcpatch", "version": doc.tool_version}},
            },
        },
        "product_tree": _product_tree(doc),
        "vulnerabilities": [_vulnerability(doc)],
    }


def render(doc: VexDocument) -> str:
    return json.dumps(build(doc), indent=2, sort_keys=True, allow_nan=False) + "\n"  # 6.2.13
