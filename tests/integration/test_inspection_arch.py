"""`inv inspect` on Debian's own arm64 and s390x smc.ko, vulnerable and fixed: the verdict
principle of x86-64 on a little-endian AArch64 and a big-endian S/390 module.

The linux-image packages come through smcpatch's own private apt configuration with the foreign
architecture added (plumbing.apt, ``foreign_arches``; /etc/apt untouched) into the shared test
cache; only smc.ko and the kernel's config are extracted from them.

Debian builds arm64 and s390x without preemption (CONFIG_PREEMPT_VOLUNTARY, TREE_RCU, no
CONFIG_PREEMPT_RCU): rcu_read_lock() leaves no code there, so a fixed stripped module shows no
__rcu_read_lock call and no DWARF.  Its vermagic names no preemption, so the absence of the dst
reference decides, and the reasons say so.  bookworm-security serves no s390x: the fixed s390x
module is trixie-security's 6.12.111.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from smcpatch.inspection import inspect_module
from smcpatch.plumbing.apt import Apt
from smcpatch.plumbing.cache import Cache
from tests.faults import inv

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Image:
    key: str
    arch: str  # Debian architecture
    suites: tuple[str, ...]  # () = the host's own sources
    package: str
    version: str
    expected: str


IMAGES = [
    Image("arm64-vulnerable", "arm64", (), "linux-image-6.1.0-50-arm64", "6.1.176-1",
          "vulnerable"),
    Image("arm64-fixed", "arm64", ("bookworm-security",), "linux-image-6.1.0-56-arm64",
          "6.1.192-2", "fixed"),
    Image("s390x-vulnerable", "s390x", (), "linux-image-6.1.0-50-s390x", "6.1.176-1",
          "vulnerable"),
    Image("s390x-fixed", "s390x", ("trixie-security",), "linux-image-6.12.111+deb13-s390x",
          "6.12.111-1", "fixed"),
]


def _image_deb(cache: Cache, image: Image) -> Path:
    """The package from the cache's debs, else downloaded (SHA256-checked) by smcpatch's Apt."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("apt-get/dpkg-deb missing: not a Debian host")
    apt = Apt(cache, suites=image.suites, foreign_arches=(image.arch,))
    apt.update()
    name = f"{image.package}:{image.arch}"
    record = apt.show(name, image.version) or apt.show(
        f"{image.package}-unsigned:{image.arch}", image.version)
    if record is None:
        pytest.skip(f"the archive no longer serves {name} {image.version}")
    [deb] = apt.download([record], cache.dir("debs"))
    return deb


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
def test_debian_arch_module(image: Image, test_cache: Cache) -> None:
    deb = _image_deb(test_cache, image)
    module, config = _extract(deb, test_cache.dir("arch-extracted", deb.stem))
    assert "CONFIG_PREEMPT_RCU=y" not in config.read_text().splitlines()  # as said above

    info = inspect_module(module)
    ev = info.evidence
    assert ev.verdict == image.expected, ev.reasons
    release = re.sub(r"^linux-image-", "", image.package)  # 6.1.0-50-arm64
    assert info.vermagic is not None and info.vermagic.startswith(release + " SMP")
    assert "preempt" not in info.vermagic.split()
    if image.arch == "arm64":
        assert "aarch64" in info.vermagic.split()
    if image.expected == "fixed":
        # no lock call to see and no DWARF: the absent dst reference decides, and says so
        assert not ev.dst_ref_sites and not ev.rcu_lock_sites
        assert "non-preemptible" in ev.reasons[-1], ev.reasons
    else:
        assert [s.target for s in ev.dst_ref_sites] == ["dst_release"]

    # the command says the same on its first line, no traceback
    proc = inv("inspect", "--module", str(module))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == f"{module}: {image.expected}", proc.stdout[:2000]
    assert proc.returncode == (0 if image.expected == "fixed" else 1)
