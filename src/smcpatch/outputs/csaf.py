"""CSAF 2.0 with the VEX profile (csaf_vex, CSAF 2.0 section 4.5) over the product model.

Product tree: vendor (Debian, or smcpatch for its rebuilt modules) -> product_name (the package,
or smc.ko) -> product_version (the Debian version, or the kernel release a module was rebuilt
for) -> architecture, whose product carries the purl and the hashes of the package and of the
modules judged in it (smc.ko, tls.ko). One vulnerability per CVE of the series the statements
name: the CVE with its CWE, a note with each product's evidence, the four product_status lists,
a flag per known_not_affected product (its justification), an impact threat and remediations
per known_affected one (vendor_fix: Debian's version that fixed that CVE; workaround: a rebuilt
module or keeping the module unloaded).

The publisher is category "other": smcpatch is neither the vendor (Debian), nor the finder of the
CVE, nor its coordinator, but a third party that analyses others' products (and for rebuilt
modules, republishes one). Its namespace is overridable (outputs.products.Publisher).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from ..cve import CVE, TITLE, vulnerability
from .products import ProductStatement, Status, VexDocument

NAME = "csaf"
SUFFIX = ".csaf.json"
PRODUCT_STATUS = {Status.FIXED: "fixed", Status.AFFECTED: "known_affected",
                  Status.NOT_AFFECTED: "known_not_affected",
                  Status.UNDER_INVESTIGATION: "under_investigation"}


def _references(cve: str) -> list[dict[str, str]]:
    return [{"category": "external", "summary": f"{cve} (CVE record)",
             "url": f"https://www.cve.org/CVERecord?id={cve}"},
            {"category": "external", "summary": f"{cve} (NVD)",
             "url": f"https://nvd.nist.gov/vuln/detail/{cve}"}]


def _full_product_name(statements: list[ProductStatement]) -> dict[str, Any]:
    """One product, whatever the CVEs said of it: the package's file and each module judged."""
    s = statements[0]
    files = dict.fromkeys(f for st in statements for f in (st.file, st.module) if f is not None)
    hashes = [{"file_hashes": [{"algorithm": "sha256", "value": f.sha256}], "filename": f.path}
              for f in files]
    helper: dict[str, Any] = {"purl": s.purl}
    if hashes:
        helper["hashes"] = hashes
    return {"name": s.title, "product_id": s.product_id, "product_identification_helper": helper}


def _product_tree(doc: VexDocument) -> dict[str, Any]:
    tree: dict[str, dict[str, dict[str, list[list[ProductStatement]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for statements in doc.products().values():
        s = statements[0]
        tree[s.title.split(" ", 1)[0]][s.name][s.version].append(statements)
    return {"branches": [
        {"category": "vendor", "name": vendor, "branches": [
            {"category": "product_name", "name": name, "branches": [
                {"category": "product_version", "name": version, "branches": [
                    {"category": "architecture", "name": leaf[0].arch,
                     "product": _full_product_name(leaf)} for leaf in leaves]}
                for version, leaves in versions.items()]}
            for name, versions in names.items()]}
        for vendor, names in tree.items()]}


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """text -> the product ids it is said of, in first-seen order."""
    out: dict[str, list[str]] = defaultdict(list)
    for text, product_id in pairs:
        out[text].append(product_id)
    return out


def _vulnerability(doc: VexDocument, cve: str) -> dict[str, Any]:
    about = doc.about(cve)
    vuln_facts = vulnerability(cve)
    status: dict[str, list[str]] = defaultdict(list)
    for s in about:
        status[PRODUCT_STATUS[s.status]].append(s.product_id)
    notes = [{"category": "description", "title": "Vulnerability description",
              "text": vuln_facts.description}]
    for s in about:
        undecided = s.action if s.status is Status.UNDER_INVESTIGATION and s.action else ""
        notes.append({"category": "details", "title": f"Binary evidence: {s.title}",
                      "text": f"{s.evidence} {undecided}".strip()})
    vuln: dict[str, Any] = {"cve": cve, "cwe": {"id": vuln_facts.cwe, "name": vuln_facts.cwe_name},
                            "title": vuln_facts.title, "notes": notes,
                            "references": _references(cve), "product_status": dict(status)}
    flags = _grouped([(s.justification.value, s.product_id)
                      for s in doc.with_status(Status.NOT_AFFECTED, cve) if s.justification])
    if flags:
        vuln["flags"] = [{"label": label, "product_ids": ids} for label, ids in flags.items()]
    affected = doc.with_status(Status.AFFECTED, cve)
    if affected:
        vuln["threats"] = [{"category": "impact", "details": s.evidence,
                            "product_ids": [s.product_id]} for s in affected]
    # the upgrade settles an undecided product too; a workaround is for affected ones
    fixes = _grouped([(s.upgrade, s.product_id) for s in about if s.upgrade])
    workarounds = _grouped([(s.action, s.product_id) for s in affected if s.action])
    remediations = ([{"category": "vendor_fix", "details": text, "product_ids": ids}
                     for text, ids in fixes.items()]
                    + [{"category": "workaround", "details": text, "product_ids": ids}
                       for text, ids in workarounds.items()])
    if remediations:
        vuln["remediations"] = remediations
    return vuln


def _title(doc: VexDocument) -> str:
    if doc.cves in ([], [CVE]):
        return TITLE
    return f"net: use-after-free of sk_dst_get(sk)->dev ({', '.join(doc.cves)})"


def build(doc: VexDocument) -> dict[str, Any]:
    when = doc.timestamp
    return {
        "document": {
            "category": "csaf_vex",
            "csaf_version": "2.0",
            "lang": "en",
            "title": f"{_title(doc)}: smcpatch's binary analysis of Debian kernel packages",
            # every fact here comes from packages Debian publishes (CSAF 2.0 has TLP v1 labels)
            "distribution": {"tlp": {"label": "WHITE"}},
            "publisher": {"category": "other", "name": doc.publisher.name,
                          "namespace": doc.publisher.namespace},
            "notes": [{"category": "summary", "title": "What this document is",
                       "text": f"Generated by smcpatch {doc.tool_version} from the binaries "
                               f"themselves: each product's smc.ko (tls.ko for CVE-2025-40149) "
                               f"was inspected for the fix of each CVE of the series "
                               f"({', '.join(doc.cves)}); the evidence is given per product "
                               "and CVE."}],
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
        "vulnerabilities": [_vulnerability(doc, cve) for cve in doc.cves],
    }


def render(doc: VexDocument) -> str:
    return json.dumps(build(doc), indent=2, sort_keys=True, allow_nan=False) + "\n"  # 6.2.13
