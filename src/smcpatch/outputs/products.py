"""What smcpatch knows about each product, stated once for every VEX format.

A ProductStatement is one product, one CVE of the series, one status and the evidence behind it:
a Debian package (its smc.ko, or for CVE-2025-40149 its tls.ko, judged from the binary), or an
smc.ko smcpatch rebuilt for a kernel and verified. A product has one statement per CVE; the fix
without a CVE id (0b0e4d51c655) is no VEX statement (cve.vulnerabilities() leaves it out).
A VexDocument is the statements plus what holds for the whole document (when, which tool, who
publishes). The writers (openvex, csaf, cyclonedx) only spell these facts in their format, so a
fourth format is one more small module over this one.

Statements come from verify's TargetReport and scan's ScanRow here; any other command makes them
with ProductStatement.debian() / .rebuilt() and hands them to outputs.vex.write.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..cve import CVE, vulnerabilities, vulnerability
from ..kernels.versions import series_of, upstream_of
from .purl import Origin, purl

if TYPE_CHECKING:  # annotations only: writing needs neither stage imported
    from ..pipeline.report import ModuleReport, TargetReport
    from ..pipeline.scan import ScanRow


class Status(StrEnum):
    """The VEX statuses (OpenVEX's words; each writer maps them to its own)."""

    FIXED = "fixed"
    AFFECTED = "affected"
    NOT_AFFECTED = "not_affected"
    UNDER_INVESTIGATION = "under_investigation"


class Justification(StrEnum):
    """Why a product is not affected: OpenVEX's vocabulary, which CSAF's flags share."""

    COMPONENT_NOT_PRESENT = "component_not_present"
    VULNERABLE_CODE_NOT_PRESENT = "vulnerable_code_not_present"
    VULNERABLE_CODE_NOT_IN_EXECUTE_PATH = "vulnerable_code_not_in_execute_path"
    VULNERABLE_CODE_CANNOT_BE_CONTROLLED_BY_ADVERSARY = (
        "vulnerable_code_cannot_be_controlled_by_adversary")
    INLINE_MITIGATIONS_ALREADY_EXIST = "inline_mitigations_already_exist"


# the inspector's verdicts; scan adds not_affected (the package ships no smc.ko)
_STATUS_OF_VERDICT = {"fixed": Status.FIXED, "vulnerable": Status.AFFECTED,
                      "not_affected": Status.NOT_AFFECTED,
                      "unknown": Status.UNDER_INVESTIGATION}


def status_of(verdict: str) -> Status:
    """A verdict as a VEX status; anything undecided is under investigation."""
    return _STATUS_OF_VERDICT.get(verdict, Status.UNDER_INVESTIGATION)


def debian_fix_after(version: str, cve: str = CVE) -> str | None:
    """Debian's first version of this version's series that fixed `cve`, when it is a later one
    (a kernel at or past it that is still not fixed has no upgrade we know of)."""
    upstream = upstream_of(version.split(":", 1)[-1])
    fixed = vulnerability(cve).debian_fixed.get(series_of(upstream))
    if fixed is None or _numbers(upstream) >= _numbers(upstream_of(fixed)):
        return None
    return fixed


def _numbers(upstream: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", upstream.split("~", 1)[0])[:3])


@dataclass(frozen=True)
class File:
    """A file by name (a .deb) or by its path inside a package (smc.ko), and its SHA256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ProductStatement:
    origin: Origin  # debian: Debian's package; smcpatch: a module we rebuilt
    name: str  # the package, or smc.ko
    version: str  # the Debian version, or the kernel release a module was rebuilt for
    arch: str
    status: Status
    evidence: str  # what the binary showed, in a sentence or two
    file: File | None = None  # the product's own file: the .deb, or the rebuilt smc.ko
    module: File | None = None  # smc.ko inside the package
    justification: Justification | None = None  # not_affected only
    fixed_in: str | None = None  # the Debian version that fixed the series (affected: upgrade)
    action: str | None = None  # what to do short of upgrading (a workaround)
    cve: str = CVE  # the CVE of the series this statement is about

    def __post_init__(self) -> None:
        vulnerability(self.cve)  # a CVE of the series, or a ValueError
        if (self.status is Status.NOT_AFFECTED) != (self.justification is not None):
            raise ValueError(f"{self.purl}: a justification goes with not_affected, only")
        if self.status is Status.AFFECTED and not (self.action or self.fixed_in):
            raise ValueError(f"{self.purl}: affected needs an upgrade or an action")
        if not self.evidence.strip():
            raise ValueError(f"{self.purl}: no evidence")
        for f in (self.file, self.module):
            if f is not None and not re.fullmatch(r"[0-9a-f]{64}", f.sha256):
                raise ValueError(f"{self.purl}: {f.path}: not a SHA256: {f.sha256!r}")

    @classmethod
    def debian(cls, package: str, version: str, arch: str, status: Status, evidence: str,
               deb_sha256: str = "", module: File | None = None,
               justification: Justification | None = None,
               action: str | None = None, cve: str = CVE) -> ProductStatement:
        """A Debian package; Debian's version of its series that fixed `cve` is looked up
        (cve.py, from the fix's signature)."""
        pool_version = version.split(":", 1)[-1]  # the pool's file name drops an epoch
        deb = File(f"{package}_{pool_version}_{arch}.deb", deb_sha256) if deb_sha256 else None
        return cls("debian", package, version, arch, status, evidence, deb, module,
                   justification, debian_fix_after(version, cve), action, cve)

    @classmethod
    def rebuilt(cls, release: str, arch: str, module_sha256: str, evidence: str,
                cve: str = CVE, status: Status = Status.FIXED,
                action: str | None = None) -> ProductStatement:
        """An smc.ko smcpatch rebuilt with the fix for one kernel release and verified: fixed
        in every CVE whose fix it was built with (the others as our after-module is)."""
        return cls("smcpatch", "smc.ko", release, arch, status, evidence,
                   File("smc.ko", module_sha256), action=action, cve=cve)

    @property
    def purl(self) -> str:
        return purl(self.origin, self.name, self.version, self.arch)

    @property
    def module_purl(self) -> str | None:
        """The module inside the package: the package's purl with its path as subpath."""
        if self.module is None:
            return None
        return purl(self.origin, self.name, self.version, self.arch, self.module.path)

    @property
    def product_id(self) -> str:
        """A short id unique in a document as the purl is (CSAF product_id)."""
        return f"{self.origin}:{self.name}:{self.version}:{self.arch}"

    @property
    def title(self) -> str:
        vendor = "Debian" if self.origin == "debian" else "smcpatch"
        return f"{vendor} {self.name} {self.version} ({self.arch})"

    @property
    def upgrade(self) -> str | None:
        """The vendor's fix, for a product affected (or perhaps affected) whose series Debian
        fixed: a kernel Debian fixed settles an undecided binary too."""
        if self.status not in (Status.AFFECTED, Status.UNDER_INVESTIGATION) or not self.fixed_in:
            return None
        # a stable release's own build carries a suffix (6.12.107-1~deb12u1): name the pattern
        suffix = re.search(r"-[^-~]+(~.+)$", self.version)
        such = f" (in this release, a build such as {self.fixed_in}{suffix[1]})" if suffix else ""
        return (f"Upgrade to a Debian kernel built from linux {self.fixed_in} or later{such} and "
                "reboot into it.")

    @property
    def advice(self) -> str | None:
        """Everything to do, in one text (formats with one field for it)."""
        action = self.action
        if action and self.status is Status.AFFECTED:
            action = f"Workaround: {action[:1].lower()}{action[1:]}"
        return " ".join(x for x in (self.upgrade, action) if x) or None

    def facts(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Publisher:
    """Who issues the documents. The default namespace is a reserved name (RFC 2606 .invalid):
    a valid URL that can never point at someone else; a deployment sets its own."""

    name: str = "smcpatch (automated binary analysis)"
    namespace: str = "https://smcpatch.invalid"


@dataclass(frozen=True)
class VexDocument:
    statements: tuple[ProductStatement, ...]
    generated: datetime
    publisher: Publisher = field(default_factory=Publisher)
    tool_version: str = __version__

    def __post_init__(self) -> None:
        if self.generated.tzinfo is None:
            raise ValueError("generated must be timezone-aware")
        keys = [(s.cve, s.purl) for s in self.statements]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two statements for one product and CVE: {sorted(keys)}")

    @classmethod
    def of(cls, statements: Iterable[ProductStatement], generated: datetime | None = None,
           publisher: Publisher | None = None) -> VexDocument:
        """Ordered by purl, then CVE (the series' order): the same facts make the same document
        whatever their order."""
        order = list(vulnerabilities())
        return cls(tuple(sorted(statements, key=lambda s: (s.purl, order.index(s.cve)))),
                   generated or datetime.now(UTC).replace(microsecond=0),
                   publisher or Publisher())

    @property
    def timestamp(self) -> str:
        return self.generated.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def digest(self) -> str:
        """Of the facts only (not the time, the tool or the publisher): same facts, same id."""
        facts = [s.facts() for s in self.statements]
        return hashlib.sha256(json.dumps([CVE, facts], sort_keys=True).encode()).hexdigest()

    @property
    def tracking_id(self) -> str:
        """A stateless tool cannot bump a document's version: each set of facts is its own
        document (version 1), and the same facts give the same id."""
        return f"SMCPATCH-{CVE}-{self.digest[:16].upper()}"

    @property
    def cves(self) -> list[str]:
        """The CVEs the document states something about, in the series' order."""
        said = {s.cve for s in self.statements}
        return [cve for cve in vulnerabilities() if cve in said]

    def about(self, cve: str) -> list[ProductStatement]:
        """The statements about one CVE."""
        return [s for s in self.statements if s.cve == cve]

    def products(self) -> dict[str, list[ProductStatement]]:
        """product id -> its statements (one per CVE), in the document's order."""
        out: dict[str, list[ProductStatement]] = {}
        for s in self.statements:
            out.setdefault(s.product_id, []).append(s)
        return out

    def with_status(self, status: Status, cve: str | None = None) -> list[ProductStatement]:
        return [s for s in self.statements
                if s.status is status and (cve is None or s.cve == cve)]


# -- what to do; statements from scan's rows -----------------------------------------------------
NO_LOAD = ("or keep smc from loading where SMC is not used (install smc /bin/false in "
           "/etc/modprobe.d)")
REBUILD = ("Load an smc.ko rebuilt with the fix for this exact kernel (smcpatch "
           "verify --kernel {release} builds and checks one; smcpatch dkms --kernel {release} "
           "--out DIR packages it for DKMS), " + NO_LOAD + ".")
VERIFIED = ("Load the smc.ko smcpatch rebuilt with the fix for this kernel and "
            "verified ({purl}, SHA256 {sha256}; smcpatch dkms --kernel {release} --out DIR "
            "packages it for DKMS), " + NO_LOAD + ".")
UNDECIDED = ("The binary alone did not settle it: run smcpatch verify --kernel {release}, which "
             "also builds the module with and without the fix and compares.")
# a sibling CVE's fix is not in the series' default: --fix all builds the module with it
REBUILD_FAMILY = ("Load an smc.ko rebuilt with every fix of the series for this exact kernel "
                  "(smcpatch verify --kernel {release} --fix all builds and checks one; smcpatch "
                  "dkms --kernel {release} --fix all --out DIR packages it for DKMS), " + NO_LOAD
                  + ".")
# tls.ko: smcpatch rebuilds no tls.ko; Debian's upgrade, or tls kept unloaded
NO_TLS = ("Keep tls from loading where kernel TLS is not used (install tls /bin/false in "
          "/etc/modprobe.d).")
# our module built without some fix of the series (--fix chose others)
REBUILD_ALL = ("Rebuild it with every fix of the series (smcpatch verify --kernel {release} "
               "--fix all), " + NO_LOAD + ".")


def from_scan(rows: Iterable[ScanRow]) -> list[ProductStatement]:
    """Per image judged, one statement per CVE of the series it was judged for (a row that
    failed says nothing; a row judged before per-fix verdicts says CVE-2025-40168 only)."""
    return [s for row in rows if row.error is None for s in _scan_statements(row)]


def _scan_statements(row: ScanRow) -> list[ProductStatement]:
    if not row.fixes and not row.tls_module_path:  # judged before per-fix verdicts (or no
        return [_scan_statement(row)]  # module of the series in it): CVE-2025-40168's word
    out = []
    for vuln in vulnerabilities().values():
        judged = next((f for f in row.fixes if f.get("fix") == vuln.fix), None)
        if vuln.module == "tls":
            if judged is not None:
                out.append(_scan_fix(row, vuln.cve, judged, row.tls_module_path,
                                     row.tls_module_sha256))
            elif row.fixes and not row.tls_module_path:  # judged today, and no tls.ko in it
                out.append(_not_present(row, vuln.cve, "tls.ko"))
        elif row.verdict == "not_affected":
            out.append(_not_present(row, vuln.cve, "smc.ko"))
        elif judged is not None:
            out.append(_scan_fix(row, vuln.cve, judged, row.module_path, row.module_sha256))
        elif vuln.cve == CVE:
            out.append(_scan_statement(row))
    return out


def _scan_fix(row: ScanRow, cve: str, judged: dict[str, Any], path: str,
              sha256: str) -> ProductStatement:
    """One CVE of one image, from its fix's verdict in the module that carries it."""
    status = status_of("unknown" if judged["verdict"] == "undecided" else str(judged["verdict"]))
    reasons = [str(r) for r in judged.get("reasons", [])]
    functions = ", ".join(vulnerability(cve).functions)
    notes = (f"smcpatch inspected {path or 'the package'} of {row.package} {row.version} "
             f"({row.suite}) for {cve} ({functions}): "
             + " ".join(_sentence(r) for r in reasons[-1:] or [str(judged["verdict"])]))
    if cve == CVE:
        notes += " " + _changelog_note(row)
    module = File(path, sha256) if sha256 else None
    tls = vulnerability(cve).module == "tls"
    action = (NO_TLS if tls and status is Status.AFFECTED
              else None if tls else _action(status, row.release, cve))
    return ProductStatement.debian(row.package, row.version, row.arch, status, notes.strip(),
                                   row.deb_sha256, module, None, action, cve)


def _not_present(row: ScanRow, cve: str, module: str) -> ProductStatement:
    return ProductStatement.debian(
        row.package, row.version, row.arch, Status.NOT_AFFECTED,
        f"{row.package} {row.version} ({row.suite}) ships no {module}: the code of {cve} is not "
        "in this kernel's modules.", row.deb_sha256,
        justification=Justification.COMPONENT_NOT_PRESENT, cve=cve)


def _scan_statement(row: ScanRow) -> ProductStatement:
    status = status_of(row.verdict)
    notes = (f"smcpatch inspected {row.module_path or 'the package'} of {row.package} "
             f"{row.version} ({row.suite}): {row.evidence}. {_changelog_note(row)} "
             + " ".join(_sentence(r) for r in row.reasons[-1:]))
    module = File(row.module_path, row.module_sha256) if row.module_sha256 else None
    return ProductStatement.debian(
        row.package, row.version, row.arch, status, notes.strip(), row.deb_sha256, module,
        Justification.COMPONENT_NOT_PRESENT if status is Status.NOT_AFFECTED else None,
        _action(status, row.release))


def _changelog_note(row: ScanRow) -> str:
    if row.changelog_fixed_in:
        return (f"Debian's changelog names {CVE} in {row.changelog_fixed_in} "
                f"({row.changelog}s with the binary).")
    return f"Debian's changelog of this package does not name {CVE}."


def _action(status: Status, release: str, cve: str = CVE) -> str | None:
    """What to do, for the kernel release (uname -r) the package holds: --kernel takes it and
    names the flavour too."""
    if status is Status.AFFECTED:
        return (REBUILD if cve == CVE else REBUILD_FAMILY).format(release=release)
    if status is Status.UNDER_INVESTIGATION:
        return UNDECIDED.format(release=release)
    return None


# -- from verify's reports -------------------------------------------------------------------------
def from_verify(reports: Iterable[TargetReport]) -> list[ProductStatement]:
    """Per target and per CVE of the series its modules were judged for: Debian's image (its
    shipped smc.ko judged, or its having none) and our rebuilt module, when every check of it
    passed and it can load into that kernel. A report written before per-fix verdicts says
    CVE-2025-40168 only."""
    out: list[ProductStatement] = []
    for report in reports:
        rebuilt = _rebuilt(report)
        fixed_by_us = {s.cve: s for s in rebuilt if s.status is Status.FIXED}
        if report.shipped is not None:
            out += [_image(report, report.shipped, cve, verdict, reasons, fixed_by_us.get(cve))
                    for cve, verdict, reasons in _per_cve(report.shipped)]
        elif report.image_package and not report.image_module_path and report.error is None:
            out += [_image_without_module(report, v.cve) for v in vulnerabilities().values()
                    if v.module == "smc"]
        out += rebuilt
    return out


def _per_cve(module: ModuleReport) -> list[tuple[str, str, list[str]]]:
    """(CVE, verdict, reasons) for every CVE the module was judged for; the fix without a CVE
    id is no VEX statement. A module judged before per-fix verdicts: its one verdict."""
    if not module.fixes:
        return [(CVE, module.verdict, list(module.reasons))]
    known = vulnerabilities()
    return [(str(f["cve"]), "unknown" if f["verdict"] == "undecided" else str(f["verdict"]),
             [str(r) for r in f.get("reasons", [])])
            for f in module.fixes if f.get("cve") in known]


def _image_without_module(report: TargetReport, cve: str) -> ProductStatement:
    """Fetched, and no smc.ko in it: SMC is not built in that kernel (Debian's >= 6.18)."""
    return ProductStatement.debian(
        report.image_package, report.package_version, report.arch, Status.NOT_AFFECTED,
        f"Debian's {report.image_package} {report.package_version} ships no smc.ko: SMC is not "
        "built in this kernel.", report.image_sha256,
        justification=Justification.COMPONENT_NOT_PRESENT, cve=cve)


def _image(report: TargetReport, shipped: ModuleReport, cve: str, verdict: str,
           reasons: list[str], rebuilt: ProductStatement | None) -> ProductStatement:
    package = report.image_package or f"linux-image-{report.release}"
    status = status_of(verdict)
    sha256 = _file_sha256(shipped.path)
    inside = report.image_module_path or (f"lib/modules/{report.release}/kernel/net/smc/"
                                          f"{Path(shipped.path).name}")
    action = _action(status, report.release, cve)
    if status is Status.AFFECTED and rebuilt is not None and rebuilt.file is not None:
        action = VERIFIED.format(purl=rebuilt.purl, sha256=rebuilt.file.sha256,
                                 release=report.release)
    why = reasons[-1] if reasons else verdict
    return ProductStatement.debian(
        package, report.package_version, report.arch, status,
        f"Debian's shipped smc.ko of {package} {report.package_version}, for {cve}: {why}",
        report.image_sha256, File(inside, sha256) if sha256 else None, None, action, cve)


def _rebuilt(report: TargetReport) -> list[ProductStatement]:
    """Our module, per CVE: fixed in each fix it was built with and verified (its per-fix
    check passed); a CVE whose fix was not chosen (--fix) is stated as our module is."""
    if report.after is None or not report.ok or report.compile_only:  # compile_only: no load
        return []
    sha256 = _file_sha256(report.after.path)
    if not sha256:  # nothing to name the module by
        return []
    chosen = {label for _, label in report.chosen_fixes()} or {CVE}
    out = []
    for cve, verdict, reasons in _per_cve(report.after):
        built_with = cve in chosen
        status = Status.FIXED if built_with and verdict == "fixed" else status_of(verdict)
        why = reasons[-1] if reasons else verdict
        evidence = (f"smc.ko rebuilt by smcpatch {__version__} for {report.release} "
                    f"({report.package_version}), for {cve}: "
                    + (f"built with its fix, all checks passed (vermagic, modversions, only the "
                       f"patched functions changed): {why}." if built_with else
                       f"built without its fix (not chosen with --fix): {why}.")
                    + f" It replaces the smc.ko of "
                    f"{report.image_package or 'linux-image-' + report.release}; it is not "
                    "Debian's.")
        action = (REBUILD_ALL.format(release=report.release)
                  if status in (Status.AFFECTED, Status.UNDER_INVESTIGATION) else None)
        out.append(ProductStatement.rebuilt(report.release, report.arch, sha256, evidence,
                                            cve, status, action))
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _file_sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""
