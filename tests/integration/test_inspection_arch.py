"""`inv inspect` on Debian's own arm64 and s390x smc.ko: the verdict principle of x86-64 on a
little-endian AArch64 and a big-endian S/390 module.

The linux-image packages are fetched with a private apt configuration (the host's source entries
copied, ``APT::Architectures "arm64,s390x"``; /etc/apt untouched) into the shared test cache
(``<test cache>/arch-debs/``), reused when present; only smc.ko and the kernel's config are
extracted from them.

Debian builds arm64 and s390x without CONFIG_PREEMPT_RCU (CONFIG_PREEMPT_VOLUNTARY, TREE_RCU):
rcu_read_lock() leaves no call there, so the fixed code shows no __rcu_read_lock, and a stripped
shipped module carries no DWARF to say otherwise.  The fixed arm64 module is therefore honestly
``unknown`` (no dst reference, no lock call); the vulnerable ones are ``vulnerable`` by their
dst_release call.  bookworm-security serves no s390x (its Release lists amd64 arm64 armhf i386
ppc64el): a fixed s390x kernel is skipped, with that said, when the archive has none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from smcpatch.inspection import inspect_module
from tests.conftest import cache_root_for_tests
from tests.faults import inv

pytestmark = pytest.mark.integration

HOST_APT = Path("/etc/apt")
FIXED_UPSTREAM = (6, 1, 187)  # the first 6.1 stable with the CVE-2025-40168 fix


@dataclass(frozen=True)
class Image:
    key: str
    arch: str  # Debian architecture
    candidates: tuple[tuple[str, str], ...]  # (package, version): the first the archive has


IMAGES = [
    Image("arm64-vulnerable", "arm64",
          (("linux-image-6.1.0-50-arm64", "6.1.176-1"),)),
    Image("arm64-fixed", "arm64",
          (("linux-image-6.1.0-57-arm64", "6.1.192-3"),
           ("linux-image-6.1.0-56-arm64", "6.1.192-2"),
           ("linux-image-6.1.0-57-arm64-unsigned", "6.1.192-3"))),
    Image("s390x-vulnerable", "s390x",
          (("linux-image-6.1.0-50-s390x", "6.1.176-1"),)),
    Image("s390x-fixed", "s390x", ()),  # found in the index, if it has one
]


class PrivateApt:
    """apt-get/apt-cache over the host's sources for arm64 and s390x, all state under root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        parts = root / "sources.list.d"
        for sub in ("sources.list.d", "lists/partial", "archives/partial", "apt.conf.d",
                    "preferences.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        copied = 0
        for src in sorted((HOST_APT / "sources.list.d").glob("*")):
            if src.suffix in (".list", ".sources") and src.is_file():
                shutil.copy(src, parts / f"host-{src.name}")
                copied += 1
        if (HOST_APT / "sources.list").is_file():
            shutil.copy(HOST_APT / "sources.list", parts / "host-sources.list")
            copied += 1
        if not copied:
            pytest.skip("no apt sources on this host")
        (root / "status").touch()
        self.config = root / "apt.conf"
        self.config.write_text(
            'APT::Architecture "arm64";\n'
            'APT::Architectures "arm64,s390x";\n'
            'Acquire::Check-Valid-Until "false";\n'
            'Acquire::Languages "none";\n'
            'Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";\n'
            'Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";\n'
            f'Dir::State "{root}";\n'
            f'Dir::State::Lists "{root}/lists";\n'
            f'Dir::State::status "{root}/status";\n'
            f'Dir::Cache "{root}";\n'
            f'Dir::Cache::archives "{root}/archives";\n'
            f'Dir::Cache::pkgcache "{root}/pkgcache.bin";\n'
            f'Dir::Cache::srcpkgcache "{root}/srcpkgcache.bin";\n'
            'Dir::Etc::SourceList "/dev/null";\n'
            f'Dir::Etc::SourceParts "{parts}";\n'
            f'Dir::Etc::Parts "{root}/apt.conf.d";\n'
            f'Dir::Etc::PreferencesParts "{root}/preferences.d";\n'
        )
        self.updated = False

    def run(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.config), "LC_ALL": "C"}
        proc = subprocess.run(list(args), env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=1200, check=False)
        if proc.returncode != 0:
            # apt's messages name the mirror: keep only the last line, without addresses
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            pytest.fail(f"{args[0]} {args[1]} failed: {re.sub(r'[a-z]+://[^ ]+', '<uri>', last)}")
        return proc.stdout

    def update(self) -> None:
        """apt-get update, at most once a day (the indices are the only other download)."""
        if self.updated:
            return
        stamp = self.root / "updated"
        if not stamp.is_file() or time.time() - stamp.stat().st_mtime > 24 * 3600:
            self.run("apt-get", "-q", "update")
            stamp.touch()
        self.updated = True

    def versions(self, package: str) -> list[str]:
        out = self.run("apt-cache", "madison", package)
        return [line.split("|")[1].strip() for line in out.splitlines() if "|" in line]

    def names(self, regex: str) -> list[str]:
        out = self.run("apt-cache", "search", "--names-only", f"^{regex}$")
        return sorted({line.split(" ", 1)[0] for line in out.splitlines()
                       if re.fullmatch(regex, line.split(" ", 1)[0])})


def _upstream(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3])


@pytest.fixture(scope="module")
def debs_dir() -> Path:
    d = cache_root_for_tests() / "arch-debs"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def apt(debs_dir: Path) -> PrivateApt:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("apt-get/dpkg-deb missing: not a Debian host")
    return PrivateApt(debs_dir / "apt")


def _cached_deb(debs_dir: Path, package: str, version: str, arch: str) -> Path | None:
    quoted = version.replace(":", "%3a")
    path = debs_dir / f"{package}_{quoted}_{arch}.deb"
    return path if path.is_file() and path.stat().st_size > 0 else None


def _fetch(apt: PrivateApt, debs_dir: Path, image: Image) -> tuple[Path, str, str]:
    """(deb, package, version) of the image: from the cache, else downloaded."""
    candidates = list(image.candidates)
    if not candidates:  # a fixed s390x: whatever 6.1 >= 6.1.187 the archive serves
        apt.update()
        for name in apt.names(r"linux-image-6\.1\.0-\d+-s390x"):
            for version in apt.versions(f"{name}:{image.arch}"):
                if _upstream(version) >= FIXED_UPSTREAM:
                    candidates.append((name, version))
        if not candidates:
            pytest.skip("the archive serves no fixed 6.1 kernel (>= 6.1.187) for s390x:"
                        " bookworm-security has no s390x")
    for package, version in candidates:
        cached = _cached_deb(debs_dir, package, version, image.arch)
        if cached is not None:
            return cached, package, version
    apt.update()
    for package, version in candidates:
        if version in apt.versions(f"{package}:{image.arch}"):
            apt.run("apt-get", "-q", "download", f"{package}:{image.arch}={version}",
                    cwd=debs_dir)
            deb = _cached_deb(debs_dir, package, version, image.arch)
            assert deb is not None, f"apt-get download left no {package} {version}"
            return deb, package, version
    pytest.skip(f"the archive has none of {candidates} for {image.arch}")


def _extract(deb: Path, dest: Path) -> tuple[Path, Path]:
    """smc.ko (or .ko.xz) and /boot/config-* of the package, extracted once into dest."""
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                              check=True).stdout
        tar = subprocess.run(["tar", "-x", "-C", str(tmp), "--wildcards",
                              "*/net/smc/smc.ko*", "./boot/config-*"], input=data,
                             capture_output=True, check=False)
        assert tar.returncode == 0, tar.stderr.decode(errors="replace")
        tmp.rename(dest)
    modules = sorted(dest.glob("**/net/smc/smc.ko*"))
    configs = sorted(dest.glob("boot/config-*"))
    assert modules and configs, f"{deb.name}: no smc.ko or kernel config"
    return modules[0], configs[0]



@pytest.mark.parametrize("image", IMAGES, ids=[i.key for i in IMAGES])
def test_debian_arch_module(image: Image, apt: PrivateApt, debs_dir: Path) -> None:
    deb, package, version = _fetch(apt, debs_dir, image)
    module, config = _extract(deb, debs_dir / "extracted" / deb.stem)
    preempt_rcu = "CONFIG_PREEMPT_RCU=y" in config.read_text().splitlines()

    info = inspect_module(module)
    ev = info.evidence
    fixed_kernel = _upstream(version) >= FIXED_UPSTREAM
    # Debian's arm64/s390x 6.1 configs have no CONFIG_PREEMPT_RCU: a fixed stripped module
    # shows neither a dst reference nor a lock call, which is unknown, not fixed
    expected = "vulnerable" if not fixed_kernel else ("fixed" if preempt_rcu else "unknown")
    assert ev.verdict == expected, ev.reasons
    release = package.split("-", 2)[2].removesuffix("-unsigned")  # 6.1.0-50-arm64
    assert info.vermagic is not None and info.vermagic.startswith(release + " SMP")
    if image.arch == "arm64":
        assert "aarch64" in info.vermagic.split()
    if fixed_kernel:
        assert not ev.dst_ref_sites, ev.dst_ref_sites
        if not preempt_rcu:  # no lock call to see, no DWARF: said so, not guessed
            assert not ev.rcu_lock_sites
            assert any("never calls __rcu_read_lock" in r for r in ev.reasons)
    else:
        assert [s.target for s in ev.dst_ref_sites] == ["dst_release"]

    # the command says the same on its first line, no traceback
    proc = inv("inspect", "--module", str(module))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == f"{module}: {expected}", proc.stdout[:2000]
