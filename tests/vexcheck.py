"""The VEX documents smcpatch writes, judged by others' validators and read back by the tests.

Validators (the real ones, each able to fail; tests/outputs/test_vex_formats.py shows that):
- OpenVEX: vexipy's model (warnings as errors) and the official OpenVEX 0.2.0 JSON schema, when a
  copy is at hand ($SMCPATCH_OPENVEX_SCHEMA or <test cache>/schemas/; this machine reaches
  neither GitHub nor openvex.dev);
- CycloneDX: cyclonedx-python-lib's JsonStrictValidator with its bundled 1.6 schema, and a check
  that every `affects` ref names a component of the BOM (neither the schema nor the library does);
- CSAF 2.0: `csaf` (Stefan Hagen's reference implementation: the schema and the mandatory tests
  6.1.x in-process), Red Hat's csaf-lib Verifier (its CSAF/VEX and data-type test sets), and BSI's
  @secvisogram/csaf-validator-lib (strict schema and every mandatory test 6.1.1-6.1.33, the VEX
  profile's 6.1.27.x among them), which runs on node: the tests install it with npm into
  <test cache>/node, and skip only when node or npm is absent.

Readers take each document back to {(CVE, purl type, name, version, arch): Said} through its own
structure, in the format's own words mapped here (not by smcpatch's maps), so that the tests can
hold the three formats and the JSON report against each other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from smcpatch.errors import ToolMissing
from smcpatch.plumbing import hostpkg
from smcpatch.plumbing.cache import Cache
from tests.conftest import cache_root_for_tests

HERE = Path(__file__).resolve().parent
BSI_PACKAGE, BSI_VERSION = "@secvisogram/csaf-validator-lib", "2.0.10"


# -- validators ------------------------------------------------------------------------------------
def openvex_schema() -> dict[str, Any] | None:
    env = os.environ.get("SMCPATCH_OPENVEX_SCHEMA")
    path = Path(env) if env else (cache_root_for_tests() / "schemas"
                                  / "openvex_json_schema_0.2.0.json")
    return json.loads(path.read_text()) if path.is_file() else None


def openvex_problems(document: dict[str, Any]) -> list[str]:
    from pydantic import ValidationError
    from vexipy import Document

    problems = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # vexipy warns of impact statements without a reason
            Document.model_validate(document)
    except (ValidationError, UserWarning) as exc:
        problems.append(f"vexipy: {exc}")
    schema = openvex_schema()
    if schema is not None:
        import jsonschema

        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        problems += [f"schema: {e.message}" for e in validator.iter_errors(document)]
    return problems


def cyclonedx_problems(text: str) -> list[str]:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    problems = [f"schema: {e.data.message}" for e in (errors or [])]
    data = json.loads(text)
    refs = {c.get("bom-ref") for c in _components(data)}
    problems += [f"affects ref {t['ref']} names no component"
                 for v in data.get("vulnerabilities", []) for t in v.get("affects", [])
                 if t.get("ref") not in refs]
    return problems


def csaf_problems(document: dict[str, Any]) -> list[str]:
    """`csaf`'s basic preset: the JSON schema and the mandatory tests."""
    from csaf.csaf.v20 import validate

    report = validate(document, preset="basic")
    return [f"{r.id} {r.title}: {e.message}" for r in report.results
            if not r.passed and not r.skipped for e in r.errors]


def csaf_lib_problems(path: Path) -> list[str]:
    from csaf_lib.verification import Verifier

    try:
        report = Verifier.from_file(str(path)).run_all()
    except Exception as exc:  # noqa: BLE001 - a file its model cannot read is refused
        return [f"csaf-lib could not read it: {exc}"]
    return [f"{r.test_id} {r.test_name}: {r.message}" for r in report.results if r.failed]


def bsi_library() -> Path:
    """BSI's validator library in <test cache>/node, installed there by npm on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:  # a fresh machine: installed like every tool the tests use
        try:
            hostpkg.ensure([hostpkg.Tool("node", "nodejs"), hostpkg.Tool("npm", "npm")],
                           "BSI's CSAF validator (tests)")
        except ToolMissing as exc:
            pytest.skip(f"{exc.one_line()}; the Python CSAF validators still ran")
        node, npm = shutil.which("node"), shutil.which("npm")
        assert node is not None and npm is not None
    root = cache_root_for_tests() / "node"
    library = root / "node_modules" / "@secvisogram" / "csaf-validator-lib"
    with Cache.open(cache_root_for_tests()).lock("npm-csaf-validator-lib"):
        if _installed_version(library) != BSI_VERSION:
            root.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([npm, "install", "--prefix", str(root), "--no-audit",
                                   "--no-fund", f"{BSI_PACKAGE}@{BSI_VERSION}"],
                                  capture_output=True, text=True, timeout=900, check=False)
            if proc.returncode != 0 and "ENOTSUP" in proc.stderr + proc.stdout:
                pytest.skip(f"this node cannot run {BSI_PACKAGE}: {proc.stderr.strip()[-300:]}")
            assert proc.returncode == 0, f"npm install {BSI_PACKAGE} failed: {proc.stderr}"
    return library


def _installed_version(library: Path) -> str | None:
    try:
        return str(json.loads((library / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def bsi_results(paths: list[Path]) -> dict[str, Any]:
    """Every file through BSI's library in one node call (its start costs ~3 s): per file,
    the errors of the strict schema and of every mandatory test, and which tests ran."""
    library = bsi_library()
    proc = subprocess.run([str(shutil.which("node")), str(HERE / "validate_csaf.mjs"),
                           str(library), *map(str, paths)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# -- readers ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Said:
    """What a document says of one product."""

    purl: str
    cve: str
    status: str  # fixed | affected | not_affected | under_investigation
    justification: str | None  # in the format's own words
    sha256: str | None  # of the product's own file (the .deb, the rebuilt smc.ko)
    module_sha256: str | None  # of the module inside the package (smc.ko; tls.ko for its CVE)


# CVE, purl type, name, version, arch: the purl parsed, not spelled
Key = tuple[str, str, str, str, str]
TLS_CVE = "CVE-2025-40149"  # the one CVE of the series whose module is tls.ko


def key(purl: str, cve: str = "CVE-2025-40168") -> Key:
    p = PackageURL.from_string(purl)
    return cve, p.type, p.name, p.version or "", (p.qualifiers or {}).get("arch", "")


def _module_dir(cve: str) -> str:
    return "/net/tls/" if cve == TLS_CVE else "/net/smc/"


def _by_key(said: list[Said]) -> dict[Key, Said]:
    out = {key(s.purl, s.cve): s for s in said}
    assert len(out) == len(said), "two statements for one product and CVE"
    return out


def read_openvex(document: dict[str, Any]) -> dict[Key, Said]:
    said = []
    for st in document["statements"]:
        [product] = st["products"]
        module = product.get("subcomponents", [{}])[0].get("hashes", {}).get("sha-256")
        said.append(Said(product["@id"], st["vulnerability"]["name"], st["status"],
                         st.get("justification"),
                         product.get("hashes", {}).get("sha-256"), module))
    return _by_key(said)


CSAF_STATUS = {"fixed": "fixed", "known_affected": "affected",
               "known_not_affected": "not_affected", "under_investigation": "under_investigation",
               "first_fixed": "fixed", "first_affected": "affected", "last_affected": "affected"}


def read_csaf(document: dict[str, Any]) -> dict[Key, Said]:
    products: dict[str, dict[str, Any]] = {}
    stack = list(document["product_tree"]["branches"])
    while stack:
        branch = stack.pop()
        if "product" in branch:
            products[branch["product"]["product_id"]] = branch["product"]
        stack += branch.get("branches", [])
    said = []
    for vuln in document["vulnerabilities"]:
        label = {pid: f["label"] for f in vuln.get("flags", []) for pid in f["product_ids"]}
        for category, ids in vuln["product_status"].items():
            for pid in ids:
                helper = products[pid]["product_identification_helper"]
                hashes = {h["filename"]: h["file_hashes"][0]["value"]
                          for h in helper.get("hashes", [])}
                own = [v for name, v in hashes.items() if "/" not in name]  # the .deb, smc.ko
                # a path in the package: the module of this CVE
                inside = [v for name, v in hashes.items()
                          if "/" in name and _module_dir(vuln["cve"]) in f"/{name}"]
                said.append(Said(helper["purl"], vuln["cve"], CSAF_STATUS[category],
                                 label.get(pid), own[0] if own else None,
                                 inside[0] if inside else None))
    return _by_key(said)


CYCLONEDX_STATE = {"resolved": "fixed", "resolved_with_pedigree": "fixed",
                   "exploitable": "affected", "not_affected": "not_affected",
                   "false_positive": "not_affected", "in_triage": "under_investigation"}


def _components(data: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], list(data.get("components", []))
    while stack:
        component = stack.pop()
        out.append(component)
        stack += component.get("components", [])
    return out


def _sha256(component: dict[str, Any]) -> str | None:
    return next((h["content"] for h in component.get("hashes", []) if h["alg"] == "SHA-256"),
                None)


def read_cyclonedx(data: dict[str, Any]) -> dict[Key, Said]:
    by_ref = {c["bom-ref"]: c for c in _components(data)}
    said = []
    for vuln in data["vulnerabilities"]:
        analysis = vuln["analysis"]
        for target in vuln["affects"]:
            component = by_ref[target["ref"]]
            nested = [c for c in component.get("components", [])
                      if _module_dir(vuln["id"]) in f"/{c.get('description', '')}"]
            said.append(Said(component["purl"], vuln["id"], CYCLONEDX_STATE[analysis["state"]],
                             analysis.get("justification"), _sha256(component),
                             _sha256(nested[0]) if nested else None))
    return _by_key(said)


# what each format calls "no smc.ko in the package" (OpenVEX and CSAF share the word)
NO_MODULE = {"openvex": "component_not_present", "csaf": "component_not_present",
             "cyclonedx": "code_not_present"}


def disagreements(read: dict[str, dict[Key, Said]]) -> list[str]:
    """Where the formats (name -> its reading) differ: products, statuses, justifications,
    hashes."""
    names = list(read)
    first = read[names[0]]
    problems = [f"{name} names other products: {sorted(set(read[name]) ^ set(first))}"
                for name in names[1:] if set(read[name]) != set(first)]
    for product in set.intersection(*(set(r) for r in read.values())):
        said = {name: read[name][product] for name in names}
        for fact in ("status", "sha256", "module_sha256"):
            values = {name: getattr(s, fact) for name, s in said.items()}
            if len(set(values.values())) != 1:
                problems.append(f"{product}: {fact} {values}")
        why = {name: s.justification for name, s in said.items()}
        if said[names[0]].status == "not_affected":
            if why != {name: NO_MODULE[name] for name in names}:
                problems.append(f"{product}: justification {why}")
        elif any(why.values()):
            problems.append(f"{product}: a justification without not_affected: {why}")
    return problems
