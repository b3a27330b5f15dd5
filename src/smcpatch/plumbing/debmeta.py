"""Debian's metadata, read with python-debian: deb822 stanzas (apt sources, `apt-cache show`,
Packages indices) and changelogs. The one place that parses Debian's formats.
"""

from __future__ import annotations

import gzip
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from debian.changelog import Changelog
from debian.deb822 import Deb822, Packages, PkgRelation

from ..errors import FetchError
from . import proc as children

# /usr/lib/apt/apt-helper cat-file decompresses whatever apt stored (.lz4, .xz, .gz, plain)
APT_HELPER = "/usr/lib/apt/apt-helper"


def first_stanza(text: str) -> dict[str, str]:
    """The fields of the first stanza of deb822 text (e.g. `apt-cache show`), or {}."""
    for paragraph in Deb822.iter_paragraphs(text.splitlines(keepends=True)):
        return {key: str(value) for key, value in paragraph.items()}
    return {}


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """Every stanza of deb822 text (comments dropped, continuation lines kept)."""
    for paragraph in Deb822.iter_paragraphs(text.splitlines(keepends=True)):
        yield {key: str(value) for key, value in paragraph.items()}


def release_head_fields(head: str) -> dict[str, str]:
    """The fields at the top of a Release or InRelease file (its first few KB are enough for
    Suite/Codename): an InRelease's clearsign header is skipped first."""
    if head.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        head = head.split("\n\n", 1)[-1]  # the armor headers end at the first blank line
    return first_stanza(head.rsplit("\n", 1)[0])  # the last line may be cut short


def relation_names(depends: str) -> list[str]:
    """The package names of a Depends field, the first of each alternative (python-debian's
    relation parser: versions, arch qualifiers and restrictions understood)."""
    return [alternatives[0]["name"] for alternatives in PkgRelation.parse_relations(depends)
            if alternatives]


def enabled(fields: dict[str, str]) -> bool:
    """A deb822 sources entry counts unless it says `Enabled: no` (sources.list(5))."""
    return fields.get("Enabled", "yes").strip().lower() not in ("no", "false", "0")


def index_text(path: Path) -> str:
    """A Packages index as apt stored it (lz4/xz/gz/plain), decompressed by apt itself."""
    proc = children.run([APT_HELPER, "cat-file", str(path)], capture_output=True, timeout=300,
                        what=f"reading the package index {path.name}", error=FetchError)
    if proc.returncode != 0:
        raise FetchError(f"cannot read the package index {path.name}: "
                         f"{proc.stderr.decode(errors='replace').strip()[-200:]}")
    return str(proc.stdout.decode("utf-8", "replace"))


def packages_named(path: Path, pattern: re.Pattern[str]) -> Iterator[Packages]:
    """The stanzas of a Packages index whose Package matches `pattern`, parsed by python-debian.
    The index is split on blank lines first, so the 60 000 other stanzas cost a string test,
    not a parse (a warm `inv scan` reads two suites' indices in well under a second)."""
    for chunk in index_text(path).split("\n\n"):
        name = chunk[9:chunk.find("\n")] if chunk.startswith("Package: ") else ""
        if name and pattern.fullmatch(name):
            yield Packages(chunk.splitlines(keepends=True))


@dataclass(frozen=True)
class InstalledPackage:
    """One package as dpkg's status file records it."""

    name: str
    version: str
    arch: str
    status: str  # "install ok installed", "deinstall ok config-files", ...

    @property
    def installed(self) -> bool:
        return self.status.split()[-1:] in (["installed"], ["half-configured"],
                                            ["unpacked"], ["triggers-pending"],
                                            ["triggers-awaited"])


def dpkg_status(text: str, names: set[str]) -> dict[str, InstalledPackage]:
    """The stanzas of dpkg's status file (/var/lib/dpkg/status) for these package names, parsed
    by python-debian; the other thousands of stanzas cost a string test. Where a name has
    several architectures the installed one wins."""
    found: dict[str, InstalledPackage] = {}
    for chunk in text.split("\n\n"):
        name = chunk[9:chunk.find("\n")] if chunk.startswith("Package: ") else ""
        if name.strip() not in names:
            continue
        fields = first_stanza(chunk)
        package = InstalledPackage(fields.get("Package", ""), fields.get("Version", ""),
                                   fields.get("Architecture", ""), fields.get("Status", ""))
        if package.name not in found or (package.installed and
                                          not found[package.name].installed):
            found[package.name] = package
    return found


@dataclass(frozen=True)
class ChangelogMention:
    """What a Debian changelog says about a CVE: the entry (version) that names it, if any."""

    cve: str
    version: str | None  # the changelog entry naming the CVE, e.g. 6.1.187-1; None: silent
    line: str = ""  # the changelog line, e.g. "smc: Use __sk_dst_get() ... (CVE-2025-40168)"

    @property
    def says_fixed(self) -> bool:
        return self.version is not None


def cve_mention(text: str, cve: str) -> ChangelogMention:
    """Find the changelog entry that names `cve`. A package's changelog holds only entries up to
    its own version, so a mention means Debian says this package carries the fix. Kernel image
    changelogs are the linux-signed one with the whole linux changelog appended; the entry
    version reported is the linux one (6.1.187-1), not the signing wrapper's (6.1.187+1)."""
    if cve not in text:
        return ChangelogMention(cve, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # python-debian warns about odd trailer lines
        changelog = Changelog(text, strict=False)
    for block in changelog:
        changes = block.changes()
        for i, line in enumerate(changes):
            if cve in line:
                context = " ".join(p.strip(" -*") for p in changes[max(0, i - 1):i + 1])
                version = _linux_version(block) or str(block.version)
                return ChangelogMention(cve, version, context.strip())
    return ChangelogMention(cve, None)


_SIGNED_FROM = re.compile(r"Sign kernel from linux(?:-[\d.]+)? (\S+)")


def _linux_version(block: object) -> str | None:
    """linux-signed entries say "Sign kernel from linux 6.1.187-1": the real kernel version."""
    package = getattr(block, "package", "")
    if not str(package).startswith("linux-signed"):
        return None
    for line in block.changes():  # type: ignore[attr-defined]
        match = _SIGNED_FROM.search(line)
        if match:
            return match.group(1)
    return None


def read_changelog(path: Path) -> str:
    """A changelog file (.gz or plain) as text."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")
