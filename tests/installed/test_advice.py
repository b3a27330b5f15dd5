"""Debian's advice for a vulnerable kernel: its series, the version that fixed it (from the
newest headers package's changelog), whether the suites offer a fixed image; offline says so."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from smcpatch.errors import FetchError
from smcpatch.installed.advice import (
    OFFLINE,
    AptIndex,
    ArchiveAdvisor,
    advise,
    carries,
    series_of,
)
from smcpatch.installed.root import Root
from smcpatch.plumbing.apt import Offer, PackageRecord
from smcpatch.plumbing.cache import Cache
from smcpatch.plumbing.debmeta import ChangelogMention


@pytest.mark.parametrize(("release", "shown", "same", "other"), [
    ("6.1.0-50-amd64", "6.1.0-*-amd64", "linux-image-6.1.0-57-amd64",
     "linux-image-6.1.0-0.deb11.52-amd64"),
    ("6.1.0-50-cloud-amd64", "6.1.0-*-cloud-amd64", "linux-headers-6.1.0-9-cloud-amd64",
     "linux-headers-6.1.0-9-amd64"),
    ("6.12.107+deb12-amd64", "6.12.*+deb12-amd64", "linux-image-6.12.118+deb12-amd64",
     "linux-image-6.12.118+deb13-amd64"),
    ("6.12.115+deb13.1-arm64", "6.12.*+deb13-arm64", "linux-image-6.12.117+deb13-arm64",
     "linux-image-6.12.117+deb12-arm64"),
    ("6.1.0-0.deb11.52-amd64", "6.1.0-0.deb11.*-amd64", "linux-image-6.1.0-0.deb11.60-amd64",
     "linux-image-6.1.0-60-amd64"),
])
def test_series(release: str, shown: str, same: str, other: str) -> None:
    series = series_of(release)
    assert series.shown == shown
    kind = same.split("-")[1]
    assert series.matches(same, kind) and not series.matches(other, kind)
    assert not series.matches(same + "-unsigned", kind)


@pytest.mark.parametrize(("version", "fixed", "carried"), [
    ("6.1.187-1", "6.1.187-1", True), ("6.1.192-3", "6.1.187-1", True),
    ("6.1.176-1", "6.1.187-1", False), ("6.12.111-1~deb12u1", "6.12.111-1", True),
    ("6.12.107-1~deb12u1", "6.12.111-1", False), ("6.12.111-1~bpo12+1", "6.12.111-1", True),
])
def test_carries(version: str, fixed: str, carried: bool) -> None:
    assert carries(version, fixed) is carried


class Index:
    def __init__(self, offers: list[Offer], fixed_in: str | None = "6.1.187-1",
                 unreachable: str | None = None, fail: bool = False) -> None:
        self._offers, self.fixed_in, self.fail = offers, fixed_in, fail
        self.unreachable = unreachable
        self.asked: list[tuple[str, str]] = []

    def names(self, prefix: str) -> list[str]:
        return [o.name for o in self._offers if o.name.startswith(prefix)]

    def offers(self, names: list[str]) -> list[Offer]:
        return [o for o in self._offers if o.name in names]

    def mention(self, package: str, version: str) -> ChangelogMention:
        self.asked.append((package, version))
        if self.fail:
            raise FetchError("apt-get download failed: 404")
        return ChangelogMention("CVE-2025-40168", self.fixed_in, "smc: Use __sk_dst_get()")


BOOKWORM = [Offer("linux-headers-6.1.0-50-amd64", "6.1.176-1", "bookworm"),
            Offer("linux-headers-6.1.0-57-amd64", "6.1.192-3", "bookworm-security"),
            Offer("linux-headers-6.1.0-57-cloud-amd64", "6.1.192-3", "bookworm-security"),
            Offer("linux-image-6.1.0-50-amd64", "6.1.176-1", "bookworm"),
            Offer("linux-image-6.1.0-57-amd64", "6.1.192-3", "bookworm-security")]


def test_the_newest_headers_changelog_says_and_a_fixed_image_is_offered() -> None:
    index = Index(BOOKWORM)
    advice = advise(index, "6.1.0-50-amd64")
    assert index.asked == [("linux-headers-6.1.0-57-amd64", "6.1.192-3")]
    assert (advice.fixed_in, advice.offered, advice.offered_fixed, advice.error) == (
        "6.1.187-1", "linux-image-6.1.0-57-amd64", True, None)
    assert advice.describe() == ("fixed in 6.1.187-1; bookworm-security has 6.1.192-3 "
                                 "(linux-image-6.1.0-57-amd64): upgrade and reboot")


def test_suites_without_a_fixed_image() -> None:
    offers = [o for o in BOOKWORM if o.suite == "bookworm"]  # no security suite configured
    advice = advise(Index(offers, fixed_in=None), "6.1.0-50-amd64")
    assert advice.fixed_in is None and advice.offered_fixed is False
    assert advice.describe() == ("linux-headers-6.1.0-50-amd64 6.1.176-1 does not name "
                                 "CVE-2025-40168: no Debian fix yet; block smc (--mitigate)")
    fixed_elsewhere = advise(Index(offers), "6.1.0-50-amd64")
    assert fixed_elsewhere.describe() == (
        "fixed in 6.1.187-1; bookworm has 6.1.176-1 (linux-image-6.1.0-50-amd64) at most: "
        "not fixed, block smc (--mitigate)")


def test_offline_and_unknown_series_are_said_not_raised() -> None:
    offline = advise(Index([], unreachable="the archive is unreachable: E: no network"),
                     "6.1.0-50-amd64")
    assert offline.error == "advice not fetched: the archive is unreachable (see the note)"
    stale = advise(Index(BOOKWORM, unreachable="the archive is unreachable: x", fail=True),
                   "6.1.0-50-amd64")
    assert stale.error == offline.error
    failed = advise(Index(BOOKWORM, fail=True), "6.1.0-50-amd64")
    assert failed.error == "advice not fetched: apt-get download failed: 404"
    assert "no Debian series" in (advise(Index(BOOKWORM), "6.18.44-custom").error or "")
    assert "offer no 6.12.*+deb12-amd64" in (advise(Index(BOOKWORM),
                                                    "6.12.107+deb12-amd64").error or "")


# -- the archive through apt: a fake apt serving one real .deb built here ------------------------
CHANGELOG = """linux (6.1.192-3) bookworm-security; urgency=high

  * New upstream stable update

 -- Debian Kernel Team <debian-kernel@lists.debian.org>  Sun, 16 Nov 2025 10:17:00 +0000

linux (6.1.187-1) bookworm-security; urgency=high

  * [x86] smc: Use __sk_dst_get() and dst_dev_rcu() in smc_clc_prfx_match().
    (CVE-2025-40168)

 -- Debian Kernel Team <debian-kernel@lists.debian.org>  Sun, 7 Sep 2025 19:33:00 +0000
"""


class FakeApt:
    """What AptIndex uses of plumbing.apt.Apt; `download` hands out a deb built with dpkg-deb."""

    def __init__(self, deb: Path, reachable: bool = True) -> None:
        self.deb, self.reachable, self.downloads = deb, reachable, 0

    def update(self) -> None:
        if not self.reachable:
            raise FetchError("apt-get update failed: the archive is unreachable (test)")

    def cache_command(self, *args: str) -> list[str]:
        names = [o.name for o in BOOKWORM if o.name.startswith(args[-1])]
        return ["echo", *names] if self.reachable else ["true"]

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"]}

    def offers(self, names: list[str]) -> list[Offer]:
        return [o for o in BOOKWORM if o.name in names]

    def show(self, name: str, version: str) -> PackageRecord:
        return PackageRecord(name, version, f"pool/{self.deb.name}", 0, "")

    def download(self, records: list[PackageRecord], dest: Path) -> list[Path]:
        self.downloads += 1
        return [Path(shutil.copy(self.deb, dest / self.deb.name))]


@pytest.fixture
def headers_deb(tmp_path: Path) -> Path:
    tree = tmp_path / "pkg"
    doc = tree / "usr/share/doc/linux-headers-6.1.0-57-amd64"
    doc.mkdir(parents=True)
    (doc / "changelog.Debian.gz").write_bytes(gzip.compress(CHANGELOG.encode()))
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        "Package: linux-headers-6.1.0-57-amd64\nVersion: 6.1.192-3\nArchitecture: amd64\n"
        "Maintainer: test <t@example.org>\nDescription: test\n")
    deb = tmp_path / "linux-headers-6.1.0-57-amd64_6.1.192-3_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_the_headers_changelog_is_read_once_then_cached(tmp_path: Path, headers_deb: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    apt = FakeApt(headers_deb)
    index = AptIndex(cache, apt)  # type: ignore[arg-type]
    advice = advise(index, "6.1.0-50-amd64")
    assert (advice.fixed_in, advice.offered_fixed) == ("6.1.187-1", True)
    assert "smc_clc_prfx_match" in advice.fix_line and apt.downloads == 1
    assert advise(index, "6.1.0-50-amd64") == advice and apt.downloads == 1
    [entry] = (cache.root / "host-advice").iterdir()
    entry.write_text(entry.read_text().replace("6.1.187-1", "6.1.100-1"))  # damaged: redone
    assert advise(index, "6.1.0-50-amd64").fixed_in == "6.1.187-1" and apt.downloads == 2
    assert list((cache.root / "tmp").iterdir()) == []


def test_an_unreachable_archive_is_one_note(tmp_path: Path, headers_deb: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    advisor = ArchiveAdvisor(Root.at(tmp_path), tmp_path / "cache")
    monkeypatch.setattr(advisor, "_apt", lambda cache: FakeApt(headers_deb, reachable=False))
    first, second = advisor.advise("6.1.0-50-amd64"), advisor.advise("6.12.107+deb12-amd64")
    assert first.error == second.error == OFFLINE
    assert advisor.notes == ["advice could not be fetched: apt-get update failed: the archive "
                             "is unreachable (test)"]
