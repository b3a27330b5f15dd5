"""Scan every published Debian kernel image from its binary: list the linux-image packages of
some suites and architectures from the archive's Packages indices, download only those debs,
extract only smc.ko, tls.ko and the changelog, and judge each fix of the series in them with the
inspector (smc.ko: the four smc fixes; tls.ko: CVE-2025-40149).

Each image's result is cached by the package's SHA256 (the index says it before any download),
so a rescan reads the indices and the cached results only. Nothing is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import inspection
from ..errors import InspectError, SmcpatchError
from ..inspection.model import ModuleInfo
from ..kernels.targets import ARCH_FLAVOURS, HOST_ARCH
from ..plumbing import debmeta, proc
from ..plumbing.apt import Apt, PackageRecord
from ..plumbing.cache import Cache
from ..plumbing.files import temp_name, write_atomic
from ..plumbing.progress import Progress, silent
from . import images

CVE = "CVE-2025-40168"
# bump when what a result holds changes: cached results are made again (2: per fix, tls.ko)
RESULT_RECIPE = 2


@dataclass(frozen=True)
class Image:
    """One linux-image package of one suite, as the archive's index lists it."""

    package: str
    version: str
    arch: str
    flavour: str
    release: str  # the kernel release (uname -r) its modules are for
    suite: str
    filename: str
    size: int
    sha256: str
    also_in: tuple[str, ...] = ()

    def record(self) -> PackageRecord:
        qualified = self.package if self.arch == HOST_ARCH else f"{self.package}:{self.arch}"
        return PackageRecord(qualified, self.version, self.filename, self.size, self.sha256)


@dataclass
class ScanRow:
    """What one image's smc.ko says, with the changelog's word beside it."""

    package: str
    version: str
    suite: str
    arch: str
    flavour: str
    release: str
    deb_sha256: str
    verdict: str = "unknown"  # fixed | vulnerable | unknown | not_affected (no smc.ko)
    evidence: str = ""  # one phrase
    reasons: list[str] = field(default_factory=list)
    module_path: str = ""  # inside the package
    module_sha256: str = ""
    vermagic: str = ""
    changelog_fixed_in: str | None = None  # the entry naming the CVE
    changelog_line: str = ""
    changelog: str = "silent"  # agree | disagree | silent
    downloaded_bytes: int = 0
    from_cache: bool = False
    also_in: list[str] = field(default_factory=list)
    error: str | None = None
    # every fix of the series judged in the image, each on its own (inspection.FixResult's
    # JSON): smc.ko's four, then tls.ko's CVE-2025-40149; a module it lacks judges nothing
    fixes: list[dict[str, Any]] = field(default_factory=list)
    tls_module_path: str = ""  # inside the package; "" when it ships no tls.ko
    tls_module_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the listing -------------------------------------------------------------------------------
def image_pattern(flavours: tuple[str, ...]) -> re.Pattern[str]:
    """linux-image-<abi>-<flavour>[-unsigned]. Every flavour of the arch is in the pattern, so
    cloud-amd64 is never read as amd64."""
    return re.compile(rf"linux-image-(?P<abi>\d+\.\d+[^\s]*?)-"
                      rf"(?P<flavour>{'|'.join(flavours)})(?P<unsigned>-unsigned)?")


def list_images(apt: Apt, suites: tuple[str, ...], arches: tuple[str, ...],
                flavours: tuple[str, ...]) -> list[Image]:
    """Every linux-image-<release> of the suites and arches, from the indices apt fetched.
    The -unsigned twin of a signed image carries the same modules: it is listed only when the
    signed one is absent. A package in several suites is listed once (the first suite)."""
    found: dict[tuple[str, str, str], Image] = {}
    lists = apt.root / "lists"
    for suite in suites:
        for arch in arches:
            pattern = image_pattern(ARCH_FLAVOURS[arch])
            for index in sorted(lists.glob(f"*_dists_{suite}_main_binary-{arch}_Packages*")):
                for stanza in debmeta.packages_named(index, pattern):
                    image = _image(stanza, suite, arch, pattern)
                    if image.flavour not in flavours or _metapackage(stanza):
                        continue
                    key = (image.package, image.version, arch)
                    if key in found:
                        first = found[key]
                        found[key] = Image(**{**asdict(first),
                                              "also_in": (*first.also_in, suite)})
                    else:
                        found[key] = image
    signed = {(i.package, i.version, i.arch) for i in found.values()}
    return sorted((i for i in found.values()
                   if not (i.package.endswith("-unsigned")
                           and (i.package.removesuffix("-unsigned"), i.version, i.arch) in signed)),
                  key=lambda i: (i.arch, i.flavour, _version_key(i.version), i.suite))


def _metapackage(stanza: Any) -> bool:
    """linux-image-6.12-amd64 and the like: they depend on the newest real image and hold no
    module (the name alone can't tell them from a 7.3 image)."""
    return any(name.startswith("linux-image-")
               for name in debmeta.relation_names(str(stanza.get("Depends", ""))))


def _image(stanza: Any, suite: str, arch: str, pattern: re.Pattern[str]) -> Image:
    name = str(stanza["Package"])
    match = pattern.fullmatch(name)
    assert match is not None
    return Image(package=name, version=str(stanza["Version"]), arch=arch,
                 flavour=match["flavour"], release=f"{match['abi']}-{match['flavour']}",
                 suite=suite, filename=str(stanza["Filename"]), size=int(stanza["Size"]),
                 sha256=str(stanza["SHA256"]))


def _version_key(version: str) -> tuple[Any, ...]:
    return tuple(int(n) if n.isdigit() else n for n in re.split(r"(\d+)", version))


# -- one image ---------------------------------------------------------------------------------
def scan_image(cache: Cache, apt: Apt, image: Image) -> ScanRow:
    """The image's row: from the cache by its SHA256, else downloaded, extracted and judged."""
    entry = cache.dir("scan", f"{image.sha256}.json")
    row = _cached_row(entry, image)
    if row is not None:
        return row
    row = ScanRow(package=image.package, version=image.version, suite=image.suite,
                  arch=image.arch, flavour=image.flavour, release=image.release,
                  deb_sha256=image.sha256, also_in=list(image.also_in))
    work = cache.dir("tmp") / temp_name(f"scan-{image.sha256[:16]}")
    work.mkdir(parents=True)
    try:
        [deb] = apt.download([image.record()], work)
        row.downloaded_bytes = image.size
        (work / "x").mkdir()
        found = images.extract_module(deb, work / "x")
        deb.unlink()  # the result is what we keep, not the 60-100 MB package
        row.module_path = found.module_path
        _judge(row, found.module, found.changelog)
        _judge_tls(row, found.tls_module, found.tls_module_path)
    except SmcpatchError as exc:
        row.error = exc.one_line()
        return row  # not cached: a failed download or extraction is retried next time
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _save(entry, row)
    return row


def _cached_row(entry: Path, image: Image) -> ScanRow | None:
    """A cached result, when it reads back whole and matches the digest it was saved with (an
    edited or damaged one is judged again: the image is downloaded anew)."""
    try:
        data = json.loads(entry.read_text())
        claimed = data.pop("digest", None)
        if claimed != _digest(data) or data.pop("recipe", None) != RESULT_RECIPE:
            return None
        data.pop("purl", None)  # results saved before the purl left the row
        row = ScanRow(**data)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    # what the listing says (suite, flavour, ...) is today's; the cache holds the binary's word
    row.package, row.version, row.arch = image.package, image.version, image.arch
    row.flavour, row.release, row.suite = image.flavour, image.release, image.suite
    row.also_in, row.from_cache = list(image.also_in), True
    row.downloaded_bytes = 0
    return row


def _save(entry: Path, row: ScanRow) -> None:
    data = {**row.to_json(), "recipe": RESULT_RECIPE}
    write_atomic(entry, json.dumps({**data, "digest": _digest(data)}))


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _judge(row: ScanRow, module: Path | None, changelog: Path | None) -> None:
    if module is None:
        row.verdict = "not_affected"
        row.evidence = "no smc.ko in the package (SMC not built)"
        row.reasons = [row.evidence]
    else:
        # where the module lives in the package: lib/modules/<release>/kernel/net/smc/...
        row.module_path = row.module_path or re.sub(r"^.*?/(?=(?:usr/)?lib/modules/)", "",
                                                    module.as_posix())
        row.module_sha256 = hashlib.sha256(module.read_bytes()).hexdigest()
        try:
            info = inspection.inspect_module(module)
        except InspectError as exc:
            row.verdict, row.evidence = "unknown", exc.one_line()
            row.reasons = [row.evidence]
        else:
            row.verdict = info.evidence.verdict
            row.fixes = [fix.to_json() for fix in info.fixes]
            row.vermagic = (info.vermagic or "").strip()
            row.reasons = list(info.evidence.reasons)
            row.evidence = evidence_phrase(info)
    mention = (debmeta.cve_mention(debmeta.read_changelog(changelog), CVE)
               if changelog is not None else debmeta.ChangelogMention(CVE, None))
    row.changelog_fixed_in, row.changelog_line = mention.version, mention.line
    if not mention.says_fixed:
        row.changelog = "silent"
    else:
        row.changelog = "disagree" if row.verdict == "vulnerable" else "agree"


def _judge_tls(row: ScanRow, module: Path | None, inside: str) -> None:
    """tls.ko's fix (CVE-2025-40149) judged like smc.ko's; a tls.ko that cannot be read is said
    in the fix's reasons (undecided), the row's smc verdict stands."""
    if module is None:
        return
    row.tls_module_path = inside
    row.tls_module_sha256 = hashlib.sha256(module.read_bytes()).hexdigest()
    try:
        row.fixes += [fix.to_json() for fix in inspection.inspect_module(module).fixes]
    except InspectError as exc:
        row.fixes += [{"fix": sig.id, "cve": sig.cve or None, "title": sig.title,
                       "module": sig.module, "functions": list(sig.functions),
                       "verdict": "undecided", "reasons": [exc.one_line()], "judged": []}
                      for sig in inspection.fixes_for_module("tls")]


def evidence_phrase(info: ModuleInfo) -> str:
    """The evidence that decided, in one phrase for the table."""
    ev = info.evidence
    if ev.verdict == "vulnerable":
        names = ", ".join(sorted({s.target for s in ev.dst_ref_sites}))
        return f"calls {names}: takes a dst reference (sk_dst_get)"
    if ev.verdict == "fixed":
        if ev.rcu_lock_sites:
            return f"__rcu_read_lock x{len(ev.rcu_lock_sites)}, no dst reference"
        if ev.dwarf_inlined:
            return "DWARF: rcu_read_lock + __sk_dst_get inlined, no dst reference"
        return "no dst reference; rcu_read_lock is no code here (vermagic: not preemptible)"
    return ev.reasons[-1] if ev.reasons else "undecided"


# -- many images -------------------------------------------------------------------------------
def scan_all(cache: Cache, apt: Apt, images: list[Image], parallel: int,
             progress: Progress = silent,
             on_done: Callable[[ScanRow], None] | None = None) -> list[ScanRow]:
    """Every image, `parallel` downloads at once (one apt-get each: apt fetches one file at a
    time from one mirror), results in the listing's order."""
    rows: dict[int, ScanRow] = {}
    total = sum(i.size for i in images)
    done_bytes = 0
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool, \
            proc.stopped_on_interrupt():
        futures = {pool.submit(scan_image, cache, apt, image): n
                   for n, image in enumerate(images)}
        for future in as_completed(futures):
            n = futures[future]
            rows[n] = future.result()
            done_bytes += images[n].size
            progress(f"{len(rows)}/{len(images)} images", done_bytes, total)
            if on_done is not None:
                on_done(rows[n])
    return [rows[n] for n in range(len(images))]
