"""Fake machines for `smcpatch host`: a root directory with kernels whose smc.ko are Debian's
real modules (from the shared test cache, fetched through the project's own helper when the
cache is cold), modprobe.d files, and dpkg's database naming the packages.

The layout is a merged-/usr Debian's: usr/lib/modules/<release>/..., lib -> usr/lib, and dpkg's
file lists naming /lib/modules/... as bookworm's packages do.
"""

from __future__ import annotations

import functools
import gzip
import lzma
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from smcpatch.installed.advice import Advice
from smcpatch.installed.runtime import Runtime
from tests.conftest import cache_root_for_tests, real_workspace

# package version -> (kernel release, Debian's verdict of its smc.ko)
KERNELS = {
    "6.1.176-1": ("6.1.0-50-amd64", "vulnerable"),
    "6.1.192-2": ("6.1.0-56-amd64", "fixed"),
    "6.12.107-1~deb12u1": ("6.12.107+deb12-amd64", "vulnerable"),
    "6.12.117-1~deb12u1": ("6.12.117+deb12-amd64", "fixed"),
}


@functools.cache
def shipped(version: str) -> Path:
    """Debian's own smc.ko of that kernel package: the test cache's entry when it is complete,
    else fetched with the project's helper (tests.conftest.real_workspace)."""
    entry = cache_root_for_tests() / "shipped" / f"{version}_amd64"
    found = sorted(entry.glob("smc.ko*")) if (entry / ".complete.json").is_file() else []
    if found:
        return found[0]
    module = real_workspace(version).shipped_module
    assert module is not None, f"{version}: Debian's image ships no smc.ko"
    return module


@dataclass
class Machine:
    root: Path

    @classmethod
    def make(cls, where: Path) -> Machine:
        root = where / "root"
        for d in ("usr/lib/modules", "etc/modprobe.d", "usr/lib/modprobe.d", "var/lib/dpkg/info",
                  "boot"):
            (root / d).mkdir(parents=True)
        (root / "lib").symlink_to("usr/lib")
        (root / "var/lib/dpkg/status").write_text("")
        return cls(root)

    def kernel(self, version: str, compress: str | None = None, package: bool = True) -> str:
        """Install a real Debian kernel's smc.ko (as shipped, or recompressed: "gz"); returns
        its release."""
        release, _ = KERNELS[version]
        source = shipped(version)
        name = source.name
        if compress == "gz":
            data = source.read_bytes()
            if name.endswith(".xz"):
                data = lzma.decompress(data)
            name, payload = "smc.ko.gz", gzip.compress(data, mtime=0)
        else:
            payload = source.read_bytes()
        module = f"/lib/modules/{release}/kernel/net/smc/{name}"
        self.file(module, payload)
        self.file(f"/lib/modules/{release}/modules.dep",
                  f"kernel/net/smc/{name}: kernel/drivers/infiniband/core/ib_core.ko\n")
        self.file(f"/lib/modules/{release}/modules.builtin", "kernel/net/unix/unix.ko\n")
        self.file(f"/boot/vmlinuz-{release}", b"not a kernel")
        if package:
            self.package(f"linux-image-{release}", version,
                         ["/.", "/boot", f"/boot/vmlinuz-{release}", "/lib",
                          f"/lib/modules/{release}", f"/lib/modules/{release}/modules.builtin",
                          module])
        return release

    def kernel_without_smc(self, release: str, version: str) -> str:
        self.file(f"/lib/modules/{release}/modules.dep", "kernel/net/unix/unix.ko:\n")
        self.file(f"/lib/modules/{release}/kernel/net/unix/unix.ko", b"")
        self.file(f"/boot/vmlinuz-{release}", b"not a kernel")
        self.package(f"linux-image-{release}", version, [f"/boot/vmlinuz-{release}"])
        return release

    def package(self, name: str, version: str, listed: list[str]) -> None:
        self.file(f"/var/lib/dpkg/info/{name}.list", "\n".join(listed) + "\n")
        status = self.root / "var/lib/dpkg/status"
        status.write_text(status.read_text() +
                          f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
                          f"Architecture: amd64\nVersion: {version}\n"
                          "Description: Linux for 64-bit PCs (signed)\n\n")

    def file(self, machine_path: str, data: str | bytes) -> Path:
        path = self.root / machine_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def modprobe(self, machine_path: str, text: str) -> Path:
        return self.file(machine_path, text)

    def snapshot(self) -> dict[str, tuple[str, bytes]]:
        """Every path under the root: its kind and mode, and a file's bytes or a link's target."""
        out: dict[str, tuple[str, bytes]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(self.root))
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", os.readlink(path).encode())
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = (f"dir {st.st_mode:o}", b"")
                else:
                    out[rel] = (f"file {st.st_mode:o}", path.read_bytes())
        return out

    def snapshot_names(self) -> dict[str, tuple[int, int, int]]:
        """Every path under the root with its mode, size and a file's mtime, no contents read
        (a root may hold a 7 GB sparse file); a directory's mtime moves when a check probes it."""
        out: dict[str, tuple[int, int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                st = (Path(dirpath) / name).lstat()
                out[str((Path(dirpath) / name).relative_to(self.root))] = (
                    st.st_mode, st.st_size, 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns)
        return out

    def copy(self, where: Path) -> Machine:
        shutil.copytree(self.root, where, symlinks=True)
        return Machine(where)


class FakeAdvisor:
    """The archive's advice without the archive: canned per series, or unreachable."""

    def __init__(self, offline: bool = False) -> None:
        self.offline = offline
        self.notes: list[str] = []
        self.asked: list[str] = []

    def advise(self, release: str) -> Advice:
        self.asked.append(release)
        if self.offline:
            note = "advice could not be fetched: the archive is unreachable (test)"
            if note not in self.notes:
                self.notes.append(note)
            return Advice(release, error="advice not fetched (the archive is unreachable)")
        if release.startswith("6.1.0-"):
            return Advice("6.1.0-*-amd64", "6.1.187-1", "smc: ... (CVE-2025-40168)",
                          "linux-headers-6.1.0-57-amd64 6.1.192-3",
                          "linux-image-6.1.0-57-amd64", "6.1.192-3", "bookworm-security", True)
        return Advice("6.12.*+deb12-amd64", "6.12.111-1", "smc: ... (CVE-2025-40168)",
                      "linux-headers-6.12.118+deb12-amd64 6.12.118-1~deb12u1",
                      "linux-image-6.12.118+deb12-amd64", "6.12.118-1~deb12u1",
                      "bookworm-security", True)


def running(release: str | None, loaded: set[str] | None = frozenset(),
            cmdline: str = "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro quiet",
            modules_disabled: bool = False) -> Runtime:
    """A running kernel as /proc would tell it."""
    return Runtime(release, None if loaded is None else frozenset(loaded), cmdline,
                   modules_disabled)
