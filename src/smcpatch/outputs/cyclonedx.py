"""CycloneDX 1.6 VEX over the product model, made of cyclonedx-python-lib objects and serialised
by the library (no JSON of ours).

Components: each product by purl (bom-ref = purl). A Debian linux-image package is typed
operating-system (it is the kernel), with each module judged in it (smc.ko; tls.ko for
CVE-2025-40149) nested as a file component (bom-ref = the package's purl with the module's path
as subpath, its SHA-256); an smc.ko smcpatch rebuilt is a file component whose pedigree names
each backported fix. Vulnerabilities: one per CVE of the series and product. CycloneDX gives a
vulnerability entry one analysis (one state, one detail), and the products of one CVE differ in
theirs, so each CVE has an entry per product (the CVE, source NVD, its CWE, affects = that
product's bom-ref); consumers match by CVE id, bom-ref and purl, not by type.
"""

from __future__ import annotations

import uuid

from cyclonedx.model import HashAlgorithm, HashType, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import (
    Component,
    ComponentType,
    Patch,
    PatchClassification,
    Pedigree,
)
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.model.impact_analysis import ImpactAnalysisJustification as Why
from cyclonedx.model.impact_analysis import ImpactAnalysisResponse as Response
from cyclonedx.model.impact_analysis import ImpactAnalysisState as State
from cyclonedx.model.issue import IssueClassification, IssueType, IssueTypeSource
from cyclonedx.model.tool import ToolRepository
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityAdvisory,
    VulnerabilityAnalysis,
    VulnerabilitySource,
)
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from ..cve import vulnerability
from .products import File, Justification, ProductStatement, Status, VexDocument

NAME = "cyclonedx"
SUFFIX = ".cdx.json"
SCHEMA_VERSION = SchemaVersion.V1_6


def _nvd(cve: str) -> VulnerabilitySource:
    return VulnerabilitySource(name="NVD", url=XsUri(f"https://nvd.nist.gov/vuln/detail/{cve}"))


STATE = {Status.FIXED: State.RESOLVED, Status.AFFECTED: State.EXPLOITABLE,
         Status.NOT_AFFECTED: State.NOT_AFFECTED, Status.UNDER_INVESTIGATION: State.IN_TRIAGE}
# CycloneDX has no "component not present": no smc.ko means no vulnerable code either
JUSTIFICATION = {
    Justification.COMPONENT_NOT_PRESENT: Why.CODE_NOT_PRESENT,
    Justification.VULNERABLE_CODE_NOT_PRESENT: Why.CODE_NOT_PRESENT,
    Justification.VULNERABLE_CODE_NOT_IN_EXECUTE_PATH: Why.CODE_NOT_REACHABLE,
    Justification.VULNERABLE_CODE_CANNOT_BE_CONTROLLED_BY_ADVERSARY: Why.REQUIRES_ENVIRONMENT,
    Justification.INLINE_MITIGATIONS_ALREADY_EXIST: Why.PROTECTED_BY_MITIGATING_CONTROL,
}


def _sha256(f: File) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=f.sha256)]


def _patch(cve: str) -> Patch:
    vuln, nvd = vulnerability(cve), _nvd(cve)
    return Patch(type=PatchClassification.BACKPORT,
                 resolves=[IssueType(type=IssueClassification.SECURITY, id=cve, name=vuln.title,
                                     source=IssueTypeSource(name=nvd.name, url=nvd.url))])


def _rebuilt(statements: list[ProductStatement]) -> Component:
    """Our module; its pedigree names each fix it was built with (its CVEs stated fixed)."""
    s = statements[0]
    fixed = [st.cve for st in statements if st.status is Status.FIXED]
    fixes = "; ".join(vulnerability(cve).upstream_fix for cve in fixed)
    return Component(
        type=ComponentType.FILE, name=s.name, version=s.version, bom_ref=s.purl,
        purl=PackageURL.from_string(s.purl), hashes=_sha256(s.file) if s.file else None,
        supplier=OrganizationalEntity(name="smcpatch"),
        description=f"smc.ko rebuilt by smcpatch for {s.version} ({s.arch}); not Debian's",
        pedigree=Pedigree(patches=[_patch(cve) for cve in fixed],
                          notes=f"The upstream fixes {fixes} applied to this kernel's own "
                                "source.") if fixed else None)


def _package(statements: list[ProductStatement]) -> Component:
    """Debian's package, with each module judged in it (smc.ko, tls.ko) nested once."""
    s = statements[0]
    nested = []
    for module, module_purl in dict.fromkeys((st.module, st.module_purl) for st in statements):
        if module is None or module_purl is None:
            continue
        nested.append(Component(
            type=ComponentType.FILE, name=module.path.rsplit("/", 1)[-1], version=s.version,
            bom_ref=module_purl, purl=PackageURL.from_string(module_purl),
            hashes=_sha256(module), description=module.path))
    return Component(
        type=ComponentType.OPERATING_SYSTEM, name=s.name, version=s.version, bom_ref=s.purl,
        purl=PackageURL.from_string(s.purl), supplier=OrganizationalEntity(name="Debian"),
        hashes=_sha256(s.file) if s.file else None, components=nested)


def _vulnerability(s: ProductStatement, doc: VexDocument) -> Vulnerability:
    state = STATE[s.status]
    if s.status is Status.FIXED and s.origin == "smcpatch":
        state = State.RESOLVED_WITH_PEDIGREE  # the component's pedigree says how
    responses = []
    if s.status is Status.AFFECTED:
        responses = ([Response.UPDATE] if s.upgrade else []) + (
            [Response.WORKAROUND_AVAILABLE] if s.action else [])
    vuln = vulnerability(s.cve)
    return Vulnerability(
        bom_ref=f"{s.cve}/{s.purl}", id=s.cve, source=_nvd(s.cve),
        cwes=[int(vuln.cwe.removeprefix("CWE-"))],
        description=vuln.description, recommendation=s.upgrade,
        workaround=s.action if s.status is not Status.FIXED else None,
        advisories=[VulnerabilityAdvisory(
            url=XsUri(f"https://www.cve.org/CVERecord?id={s.cve}"), title=f"{s.cve} (CVE record)")],
        analysis=VulnerabilityAnalysis(
            state=state, justification=JUSTIFICATION[s.justification] if s.justification else None,
            responses=responses, detail=s.evidence, first_issued=doc.generated,
            last_updated=doc.generated),
        affects=[BomTarget(ref=s.purl)])


def build(doc: VexDocument) -> Bom:
    publisher = OrganizationalEntity(name=doc.publisher.name,
                                     urls=[XsUri(doc.publisher.namespace)])
    tool = Component(type=ComponentType.APPLICATION, name="smcpatch", version=doc.tool_version)
    return Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"urn:smcpatch:cdx/{doc.digest}"),
        version=1,
        metadata=BomMetaData(timestamp=doc.generated, tools=ToolRepository(components=[tool]),
                             supplier=publisher),
        components=[_rebuilt(st) if st[0].origin == "smcpatch" else _package(st)
                    for st in doc.products().values()],
        vulnerabilities=[_vulnerability(s, doc) for s in doc.statements])


def render(doc: VexDocument) -> str:
    outputter = make_outputter(build(doc), OutputFormat.JSON, SCHEMA_VERSION)
    return outputter.output_as_string(indent=2) + "\n"
