"""plumbing.debmeta: Debian's formats read with python-debian."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest

from smcpatch.plumbing import debmeta
from smcpatch.plumbing.apt import _parse_deb822

SOURCES = """\
# the main archive, two mirrors on continuation lines
Types: deb deb-src
URIs: http://127.0.0.1:9/debian
 http://127.0.0.2:9/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://127.0.0.1:9/debian-security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb-src
URIs: http://127.0.0.1:9/src
Suites: sid
"""


def test_deb822_sources_continuations_and_enabled_no() -> None:
    found = _parse_deb822(SOURCES)
    assert [(s.uri, s.suites) for s in found] == [
        ("http://127.0.0.1:9/debian", ("bookworm", "bookworm-updates")),
        ("http://127.0.0.2:9/debian", ("bookworm", "bookworm-updates")),
    ]  # the disabled security entry and the deb-src-only entry are left out
    assert found[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_relations_and_release_heads() -> None:
    depends = ("linux-headers-6.1.0-50-common (= 6.1.176-1), linux-kbuild-6.1 (>= 6.1.176-1), "
               "gcc-12 | gcc-12-x86-64-linux-gnu, libc6 (>= 2.34) [amd64]")
    assert debmeta.relation_names(depends) == [
        "linux-headers-6.1.0-50-common", "linux-kbuild-6.1", "gcc-12", "libc6"]
    head = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\n"
            "Suite: stable\nCodename: bookworm\nDate: Sat, 01 Ja")
    assert debmeta.release_head_fields(head) == {"Origin": "Debian", "Suite": "stable",
                                                 "Codename": "bookworm"}


CHANGELOG = """\
linux-signed-amd64 (6.1.192+2) bookworm-security; urgency=high

  * Sign kernel from linux 6.1.192-2

 -- Debian Kernel Team <debian-kernel@lists.debian.org>  Mon, 16 Nov 2026 10:17:00 +0000

linux (6.1.187-1) bookworm-security; urgency=high

  * New upstream stable update:
    - smc: Use __sk_dst_get() and dst_dev_rcu() in smc_clc_prfx_match().
      (CVE-2025-40168)

 -- Ben Hutchings <benh@debian.org>  Sun, 01 Nov 2026 10:00:00 +0000

linux (6.1.176-1) bookworm; urgency=medium

  * New upstream stable update

 -- Ben Hutchings <benh@debian.org>  Thu, 02 Jul 2026 10:00:00 +0000
"""


def test_changelog_mention_names_the_fixing_entry(tmp_path: Path) -> None:
    path = tmp_path / "changelog.Debian.gz"
    path.write_bytes(gzip.compress(CHANGELOG.encode()))
    mention = debmeta.cve_mention(debmeta.read_changelog(path), "CVE-2025-40168")
    assert mention.says_fixed and mention.version == "6.1.187-1"
    assert "smc_clc_prfx_match" in mention.line and "CVE-2025-40168" in mention.line
    silent = debmeta.cve_mention(CHANGELOG, "CVE-2025-40139")
    assert not silent.says_fixed and silent.version is None


@pytest.mark.skipif(not Path(debmeta.APT_HELPER).exists(), reason="apt-helper missing")
def test_packages_index_picks_stanzas_by_name(tmp_path: Path) -> None:
    index = tmp_path / "x_Packages"
    index.write_text(
        "Package: linux-image-6.1.0-50-amd64\nVersion: 6.1.176-1\nArchitecture: amd64\n"
        "Description: Linux 6.1 for 64-bit PCs\n and a continuation line\nSize: 3\n\n"
        "Package: zsh\nVersion: 5.9-4\n\n"
        "Package: linux-image-6.1.0-50-amd64-dbg\nVersion: 6.1.176-1\n")
    if shutil.which("lz4") is None:
        plain = index
    else:  # apt stores lists lz4-compressed on hosts that say so: read through apt itself
        import subprocess
        subprocess.run(["lz4", "-q", str(index), str(tmp_path / "x_Packages.lz4")], check=True)
        plain = tmp_path / "x_Packages.lz4"
    found = list(debmeta.packages_named(plain, re.compile(r"linux-image-[\d.]+-\d+-amd64")))
    assert [(p["Package"], p["Version"]) for p in found] == [
        ("linux-image-6.1.0-50-amd64", "6.1.176-1")]
    assert "continuation" in found[0]["Description"]
