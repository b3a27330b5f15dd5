"""What to do for a vulnerable installed kernel, from Debian's own words.

A kernel's series is its ABI naming with the number that moves between uploads left open:
6.1.0-50-amd64 is of `6.1.0-*-amd64`, 6.12.107+deb12-amd64 of `6.12.*+deb12-amd64` (bookworm's
6.12, not trixie's +deb13), 6.1.0-0.deb11.52-amd64 of `6.1.0-0.deb11.*-amd64`. Changelogs are
cumulative, so the changelog of the newest package of the series names the Debian version that
fixed the CVE; the 1.7 MB `linux-headers-<abi>-<flavour>` package carries the same changelog as
the 70-100 MB image, so that is what is downloaded (through smcpatch's private apt; the answer is
cached by package and version). The machine's suites offer a fixed kernel when the newest
`linux-image-<abi>-<flavour>` of the series there is at least that version.

The archive may be out of reach: the index then is what was last fetched, the answers are the
cached ones, and what cannot be answered says why (`error`), once, not as a failure.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from debian.debian_support import Version

from ..cve import CVE
from ..errors import BadInput, FetchError, SmcpatchError
from ..kernels import versions
from ..pipeline import images
from ..plumbing import debmeta
from ..plumbing import proc as children
from ..plumbing.apt import Apt, Offer, host_sources
from ..plumbing.cache import Cache, hash_inputs, safe_name
from ..plumbing.files import temp_name, write_atomic
from .root import Root

ADVICE_RECIPE = 1  # bump when what a cached answer holds changes
SOURCES_LIMIT = 4 * 1024 * 1024  # an apt sources file is a few lines
OFFLINE = "advice not fetched: the archive is unreachable (see the note)"


@dataclass(frozen=True)
class Series:
    """The kernels of one ABI naming and flavour, e.g. 6.1.0-*-amd64."""

    series: str  # the upstream series: 6.1
    flavour: str
    abi_pattern: str  # a regular expression for the ABI: 6\.1\.0-\d+
    shown: str  # 6.1.0-*-amd64

    def matches(self, package: str, kind: str) -> bool:
        return re.fullmatch(rf"linux-{kind}-({self.abi_pattern})-{re.escape(self.flavour)}",
                            package) is not None


@dataclass(frozen=True)
class Advice:
    series: str  # 6.1.0-*-amd64
    fixed_in: str | None = None  # the Debian version whose changelog entry names the CVE
    fix_line: str = ""
    changelog_of: str = ""  # the package whose changelog said it: name version
    offered: str | None = None  # the newest linux-image of the series the suites offer
    offered_version: str | None = None
    offered_suite: str | None = None
    offered_fixed: bool | None = None  # that image carries the fix
    error: str | None = None  # the advice could not be had: why

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for a person."""
        if self.error:
            return self.error
        if not self.fixed_in:
            return (f"{self.changelog_of} does not name {CVE}: no Debian fix yet; block smc "
                    "(--mitigate)")
        if self.offered is None:
            return (f"fixed in {self.fixed_in}; the machine's suites offer no {self.series} "
                    "kernel")
        has = f"{self.offered_suite} has {self.offered_version} ({self.offered})"
        if self.offered_fixed:
            return f"fixed in {self.fixed_in}; {has}: upgrade and reboot"
        return f"fixed in {self.fixed_in}; {has} at most: not fixed, block smc (--mitigate)"


class Index(Protocol):
    """What the archive holds, as the machine's apt sources see it."""

    unreachable: str | None  # the archive could not be reached: why (the index may be stale)

    def names(self, prefix: str) -> list[str]: ...

    def offers(self, names: list[str]) -> list[Offer]: ...

    def mention(self, package: str, version: str) -> debmeta.ChangelogMention: ...


class Advisor(Protocol):
    notes: list[str]

    def advise(self, release: str) -> Advice: ...


# -- the series and the versions -----------------------------------------------------------------
def series_of(release: str) -> Series:
    """The series of a Debian kernel release (bad input for anything else)."""
    spec = versions.parse(release)
    if spec.kind != "release":
        raise BadInput(f"{release}: not a Debian kernel release")
    abi, flavour = spec.abi, spec.flavour
    if match := re.fullmatch(r"(\d+\.\d+)\.\d+(\+deb\d+)(?:\.\d+)?", abi):
        pattern = rf"{re.escape(match[1])}\.\d+{re.escape(match[2])}(?:\.\d+)?"
        shown = f"{match[1]}.*{match[2]}"
    elif match := re.fullmatch(r"(.*[-.])\d+", abi):
        pattern, shown = re.escape(match[1]) + r"\d+", f"{match[1]}*"
    else:
        pattern, shown = re.escape(abi), abi
    return Series(spec.series, flavour, pattern, f"{shown}-{flavour}")


def carries(version: str, fixed_in: str) -> bool:
    """Whether Debian version `version` carries what `fixed_in` fixed. A stable or backport
    rebuild (6.12.111-1~deb12u1, 6.12.95-1~bpo12+1) carries its base upload (6.12.111-1), which
    the changelog entry names, though `~` sorts it before that upload."""
    base = re.sub(r"(-[^-~]+)~[^-]*$", r"\1", version)
    return Version(version) >= Version(fixed_in) or Version(base) >= Version(fixed_in)


def newest(offers: list[Offer]) -> Offer | None:
    return max(offers, key=lambda o: Version(o.version), default=None)


def advise(index: Index, release: str) -> Advice:
    """The advice for one installed kernel release."""
    try:
        series = series_of(release)
    except BadInput:
        return Advice(release, error=f"{release} is not a Debian kernel release: no Debian "
                                     "series to look up")
    prefix = f"{series.series}."
    headers = newest(index.offers([n for n in index.names(f"linux-headers-{prefix}")
                                   if series.matches(n, "headers")]))
    if headers is None:
        why = (OFFLINE if index.unreachable else
               f"the machine's apt sources offer no {series.shown} kernel: Debian's fix "
               "version unknown here")
        return Advice(series.shown, error=why)
    try:
        mention = index.mention(headers.name, headers.version)
    except SmcpatchError as exc:
        return Advice(series.shown, error=OFFLINE if index.unreachable else
                      f"advice not fetched: {exc.one_line()}")
    image = newest(index.offers([n for n in index.names(f"linux-image-{prefix}")
                                 if series.matches(n, "image")]))
    return Advice(series.shown, fixed_in=mention.version, fix_line=mention.line,
                  changelog_of=f"{headers.name} {headers.version}",
                  offered=image.name if image else None,
                  offered_version=image.version if image else None,
                  offered_suite=image.suite if image else None,
                  offered_fixed=(carries(image.version, mention.version)
                                 if image and mention.version else
                                 False if image else None))


# -- the archive through smcpatch's private apt --------------------------------------------------
class AptIndex:
    """The machine's suites through a private apt configuration (its lists refreshed at most
    once a day); a changelog's answer cached by package and version."""

    def __init__(self, cache: Cache, apt: Apt) -> None:
        self.cache, self.apt = cache, apt
        self.unreachable: str | None = None
        try:
            apt.update()
        except SmcpatchError as exc:
            self.unreachable = exc.one_line()

    def names(self, prefix: str) -> list[str]:
        done = children.run(self.apt.cache_command("pkgnames", prefix), env=self.apt.env(),
                            capture_output=True, text=True, timeout=300, error=FetchError,
                            what="apt-cache pkgnames")
        return sorted(set(str(done.stdout).split()))

    def offers(self, names: list[str]) -> list[Offer]:
        return self.apt.offers(names)

    def mention(self, package: str, version: str) -> debmeta.ChangelogMention:
        entry = self.cache.dir("host-advice", safe_name(f"{package}_{version}") + ".json")
        saved = _saved(entry, package, version)
        if saved is not None:
            return saved
        record = self.apt.show(package, version)
        if record is None:
            raise BadInput(f"the archive's index has no {package} {version}")
        work = self.cache.dir("tmp") / temp_name(f"advice-{safe_name(package)}")
        work.mkdir(parents=True)
        try:
            [deb] = self.apt.download([record], work)
            (work / "x").mkdir()
            found = images.extract_module(deb, work / "x")
            text = debmeta.read_changelog(found.changelog) if found.changelog else ""
        finally:
            shutil.rmtree(work, ignore_errors=True)
        mention = debmeta.cve_mention(text, CVE)
        data = {"recipe": ADVICE_RECIPE, "package": package, "version": version,
                "cve": CVE, "fixed_in": mention.version, "line": mention.line,
                "changelog": bool(text)}
        write_atomic(entry, json.dumps({**data, "digest": hash_inputs(data)}, indent=1))
        return mention


def _saved(entry: Path, package: str, version: str) -> debmeta.ChangelogMention | None:
    """A cached answer that reads back whole and is the one asked for."""
    try:
        data = json.loads(entry.read_text())
        digest = data.pop("digest")
        if (digest != hash_inputs(data) or data["recipe"] != ADVICE_RECIPE
                or (data["package"], data["version"], data["cve"]) != (package, version, CVE)):
            return None
        return debmeta.ChangelogMention(CVE, data["fixed_in"], data["line"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def copy_sources(root: Root, cache: Cache, name: str) -> Path:
    """ROOT's apt sources (`sources.list`, `sources.list.d/*.list|*.sources`) copied into a
    directory of ours through the root resolver: apt reads the copy, never a link of the image
    (which the host would follow to its own files). The copy is named by its contents and
    published whole, so runs on the same root never see each other's half."""
    wanted = ["sources.list"] + [f"sources.list.d/{n}" for n in
                                 root.listdir("/etc/apt/sources.list.d")
                                 if n.endswith((".list", ".sources"))]
    found = {relative: data for relative in wanted
             if (data := root.read(f"/etc/apt/{relative}", SOURCES_LIMIT,
                                   "an apt sources file")) is not None}
    digest = hashlib.sha256(b"".join(hashlib.sha256(k.encode() + b"\0" + v).digest()
                                     for k, v in sorted(found.items()))).hexdigest()[:16]
    into = cache.dir("host-roots", name, f"etc-apt-{digest}")
    if into.is_dir():
        return into
    work = into.with_name(temp_name(into.name))
    (work / "sources.list.d").mkdir(parents=True)
    try:
        for relative, data in found.items():
            (work / relative).write_bytes(data)
        work.rename(into)
    except OSError:
        if not into.is_dir():
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return into


class ArchiveAdvisor:
    """Advice from the machine's own apt sources (ROOT's /etc/apt; this host's when ROOT names
    none), the archive asked once per run and only when some kernel needs advice."""

    def __init__(self, root: Root, cache_dir: Path | None) -> None:
        self.root, self.cache_dir = root, cache_dir
        self.notes: list[str] = []
        self._index: AptIndex | None = None
        self._failed: str | None = None

    def advise(self, release: str) -> Advice:
        index = self._open()
        if index is None:
            return Advice(release, error="advice not fetched (see the note)")
        advice = advise(index, release)
        note = f"advice could not be fetched: {index.unreachable}"
        if index.unreachable and advice.error and note not in self.notes:
            self.notes.append(note)
        return advice

    def _open(self) -> AptIndex | None:
        if self._index is not None or self._failed is not None:
            return self._index
        try:
            cache = Cache.open(self.cache_dir)
            self._index = AptIndex(cache, self._apt(cache))
        except SmcpatchError as exc:
            self._failed = exc.one_line()
            self.notes.append(f"advice could not be fetched: {self._failed}")
        return self._index

    def _apt(self, cache: Cache) -> Apt:
        if self.root.is_host:
            return Apt(cache)
        name = "root-" + hash_inputs(str(self.root.path))[:12]
        etc_apt = copy_sources(self.root, cache, name)
        if host_sources(etc_apt):
            return Apt(cache, host_apt_dir=etc_apt, name=name)
        self.notes.append(f"{self.root.show('/etc/apt')} names no apt sources: the advice "
                          "comes from this host's sources")
        return Apt(cache)
