"""Every fix signature (data/fixes) against Debian's own modules: smc.ko of a vulnerable and a
fixed kernel of each series (6.1.176 / 6.1.192, 6.12.107 / 6.12.117 on amd64 and arm64;
6.1.176 and trixie's 6.12.111 on s390x, which bookworm-security does not serve), and each
image's tls.ko.  The label of each fix comes from the image's own Debian changelog: a changelog
entry quoting the fix's upstream subject means Debian shipped it (all four smc fixes landed in
6.1.187-1 and 6.12.111-1; the tls fix in 6.1.162-1 and 6.12.69-1, so every tls.ko here is
fixed).  Each fix's verdict must agree with it.

bullseye's 5.10 (amd64, arm64; the mirror serves no bullseye s390x) is the oldest series:
none of the fixes, no tls.ko.

The image packages come through smcpatch's own private apt configuration (plumbing.apt; the
foreign architectures added there, /etc/apt untouched) into the shared test cache; only
smc.ko, tls.ko and the changelog are extracted from them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from smcpatch.inspection import inspect_module
from smcpatch.inspection.fixes import fixes_for_module
from smcpatch.plumbing import debmeta
from smcpatch.plumbing.apt import Apt
from smcpatch.plumbing.cache import Cache
from tests.faults import inv

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Image:
    arch: str
    suites: tuple[str, ...]  # () = the host's own sources
    package: str
    version: str
    smc_fixed: bool  # Debian's changelog names the four smc fixes (checked below, not assumed)

    @property
    def key(self) -> str:
        return f"{self.version}-{self.arch}"


IMAGES = [
    # bullseye's 5.10: none of the fixes, and no tls.ko (CONFIG_TLS unset)
    Image("amd64", ("bullseye",), "linux-image-5.10.0-32-amd64", "5.10.223-1", False),
    Image("arm64", ("bullseye",), "linux-image-5.10.0-32-arm64", "5.10.223-1", False),
    Image("amd64", (), "linux-image-6.1.0-50-amd64", "6.1.176-1", False),
    Image("amd64", ("bookworm-security",), "linux-image-6.1.0-56-amd64", "6.1.192-2", True),
    Image("amd64", ("bookworm-security",), "linux-image-6.12.107+deb12-amd64",
          "6.12.107-1~deb12u1", False),
    Image("amd64", ("bookworm-security",), "linux-image-6.12.117+deb12-amd64",
          "6.12.117-1~deb12u1", True),
    Image("arm64", (), "linux-image-6.1.0-50-arm64", "6.1.176-1", False),
    Image("arm64", ("bookworm-security",), "linux-image-6.1.0-56-arm64", "6.1.192-2", True),
    Image("arm64", ("bookworm-security",), "linux-image-6.12.107+deb12-arm64",
          "6.12.107-1~deb12u1", False),
    Image("arm64", ("bookworm-security",), "linux-image-6.12.117+deb12-arm64",
          "6.12.117-1~deb12u1", True),
    Image("s390x", (), "linux-image-6.1.0-50-s390x", "6.1.176-1", False),
    Image("s390x", ("trixie-security",), "linux-image-6.12.111+deb13-s390x", "6.12.111-1", True),
]


def _native_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _image_deb(cache: Cache, image: Image) -> Path:
    """The package from the cache's debs, else downloaded (SHA256-checked) by smcpatch's Apt."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("apt-get/dpkg-deb missing: not a Debian host")
    cached = cache.dir("debs") / f"{image.package}_{image.version}_{image.arch}.deb"
    if cached.is_file():
        return cached
    foreign = () if image.arch == _native_arch() else (image.arch,)
    apt = Apt(cache, suites=image.suites, foreign_arches=foreign)
    apt.update()
    name = f"{image.package}:{image.arch}"
    record = apt.show(name, image.version) or apt.show(
        f"{image.package}-unsigned:{image.arch}", image.version)
    if record is None:
        pytest.skip(f"the archive no longer serves {name} {image.version}")
    [deb] = apt.download([record], cache.dir("debs"))
    return deb


@dataclass(frozen=True)
class Extracted:
    smc: Path
    tls: Path | None  # None: the kernel builds no tls.ko (5.10)
    changelog: str


def _extract(deb: Path, dest: Path) -> Extracted:
    """smc.ko, tls.ko (any compression) and Debian's changelog of the package, once."""
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                              check=True).stdout
        tar = subprocess.run(["tar", "-x", "-C", str(tmp), "--wildcards", "*/net/smc/smc.ko*",
                              "*/net/tls/tls.ko*", "./usr/share/doc/*/changelog*"],
                             input=data, capture_output=True, check=False)
        errors = [line for line in tar.stderr.decode(errors="replace").splitlines()
                  if "tls.ko" not in line and "previous errors" not in line]
        assert not errors, errors  # only a missing tls.ko is an answer
        tmp.rename(dest)
    [smc] = sorted(dest.glob("**/net/smc/smc.ko*"))
    tls = next(iter(sorted(dest.glob("**/net/tls/tls.ko*"))), None)
    # Debian's changelog (changelog.Debian.gz, or changelog.gz in the 6.1 images)
    changelog = sorted(dest.glob("usr/share/doc/*/changelog*"),
                       key=lambda p: ("Debian" not in p.name, p.name))[0]
    return Extracted(smc, tls, debmeta.read_changelog(changelog))


def _label(changelog: str, title: str) -> str:
    """Debian's word on one fix: the changelog quotes its subject, or it does not."""
    return "fixed" if debmeta.cve_mention(changelog, title).says_fixed else "vulnerable"


@pytest.fixture(scope="module", params=IMAGES, ids=[i.key for i in IMAGES])
def image(request: pytest.FixtureRequest, test_cache: Cache) -> tuple[Image, Extracted]:
    img: Image = request.param
    deb = _image_deb(test_cache, img)
    return img, _extract(deb, test_cache.dir("family-extracted", deb.stem))


def test_every_smc_fix_agrees_with_debians_changelog(image: tuple[Image, Extracted]) -> None:
    img, got = image
    info = inspect_module(got.smc)
    assert info.name == "smc"
    judged = {f.fix: f for f in info.fixes}
    signatures = fixes_for_module("smc")
    assert set(judged) == {s.id for s in signatures}
    for sig in signatures:
        label = _label(got.changelog, sig.title)
        assert label == ("fixed" if img.smc_fixed else "vulnerable"), (sig.title, img)
        fix = judged[sig.id]
        assert fix.verdict == label, (sig.label, fix.reasons)
        assert fix.evidence, sig.label  # judged on code, never "not in the module"
        if label == "vulnerable":  # what told them apart: the dst refcount
            assert all(ev.dst_ref_sites for ev in fix.evidence), fix.reasons
    assert info.evidence.function == "smc_clc_prfx_match"
    assert info.evidence.verdict == judged["235f81045c00"].verdict  # the top level, as before


def test_tls_fix_agrees_with_debians_changelog(image: tuple[Image, Extracted]) -> None:
    img, got = image
    if got.tls is None:
        assert img.version.startswith("5.10."), img  # only bullseye builds no tls.ko
        pytest.skip(f"{img.package} ships no tls.ko")
    info = inspect_module(got.tls)
    [sig] = fixes_for_module("tls")
    [fix] = info.fixes
    assert info.name == "tls" and fix.cve == "CVE-2025-40149"
    assert _label(got.changelog, sig.title) == "fixed"  # every image here is past the fix
    assert fix.verdict == "fixed", fix.reasons
    where = [ev.function for ev in fix.evidence]
    # Debian's builds differ in where get_netdev_for_sock's code is: both shapes occur
    assert where in (["get_netdev_for_sock"],
                     ["tls_set_device_offload", "tls_set_device_offload_rx"]), where
    assert all(not ev.dst_ref_sites for ev in fix.evidence)


def test_inspect_command_one_line_per_fix(image: tuple[Image, Extracted]) -> None:
    img, got = image
    proc = inv("inspect", "--module", str(got.smc))
    assert "Traceback" not in proc.stdout + proc.stderr
    expected = "fixed" if img.smc_fixed else "vulnerable"
    assert proc.returncode == (0 if img.smc_fixed else 1), proc.stdout[-2000:]
    lines = [line.split() for line in proc.stdout.splitlines()]
    labels = {s.label for s in fixes_for_module("smc")}
    rows = [words for words in lines if len(words) > 2 and words[0] in labels
            and words[1] in ("fixed", "vulnerable", "undecided")]
    assert len(rows) == 4 and all(words[1] == expected for words in rows), proc.stdout
