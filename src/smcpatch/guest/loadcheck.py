"""Prove a built module loads into its own kernel: boot Debian's kernel of the module's
architecture in QEMU (TCG) and insmod the module with its dependencies from the same image.

The guest is self-contained, so it works for any architecture: a busybox-static of the guest's
architecture (from the archive, never run on the host), the module closure, and an /init that
insmods, then prints /proc/modules, the taint flags and the kernel's words about the modules.
Nothing is loaded on the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, FetchError, VmError
from ..kernels.targets import HOST_ARCH
from ..plumbing import hostpkg
from ..plumbing.apt import Apt
from ..plumbing.cache import Cache, publish_dir
from ..plumbing.proc import kill_group
from ..plumbing.progress import Progress, silent
from . import machine as vm


@dataclass(frozen=True)
class GuestMachine:
    """How QEMU boots a Debian kernel of one architecture."""

    qemu: str  # the system emulator
    package: str  # the Debian package that brings it
    machine: tuple[str, ...]  # -machine/-cpu arguments
    console: str  # the kernel's console device


GUESTS: dict[str, GuestMachine] = {
    "amd64": GuestMachine("qemu-system-x86_64", "qemu-system-x86",
                          ("-machine", "q35", "-cpu", "max"), "ttyS0"),
    "arm64": GuestMachine("qemu-system-aarch64", "qemu-system-arm",
                          ("-machine", "virt", "-cpu", "max"), "ttyAMA0"),
    "s390x": GuestMachine("qemu-system-s390x", "qemu-system-misc",
                          ("-machine", "s390-ccw-virtio",), "ttysclp0"),
}

# What the kernel says when it refuses a module (or accepts one it should not have).
COMPLAINTS = re.compile(r"version magic|disagrees about version|Unknown symbol|"
                        r"Invalid module format|no symbol version|Exec format error", re.I)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "SMCLOAD-BOOTED $(uname -r) $(uname -m)"
for m in $(cat /modules.order); do
    insmod "/modules/$m"
    echo "SMCLOAD-INSMOD $m $?"
done
echo SMCLOAD-PROC-MODULES
cat /proc/modules
echo "SMCLOAD-TAINTED $(cat /proc/sys/kernel/tainted)"
echo SMCLOAD-DMESG
dmesg | grep -iE 'smc|ib_core|pnet|module|taint|symbol'
echo SMCLOAD-DONE
poweroff -f
"""


@dataclass
class LoadResult:
    """What the guest showed: each insmod's exit status, the module in /proc/modules, the
    kernel's complaints (vermagic, CRCs, unknown symbols) and taint."""

    arch: str
    release: str
    module: str
    loaded: bool = False
    insmod: dict[str, int] = field(default_factory=dict)  # module file -> exit status
    proc_modules: list[str] = field(default_factory=list)  # the module's /proc/modules line
    complaints: list[str] = field(default_factory=list)
    kernel_lines: list[str] = field(default_factory=list)  # dmesg about the modules, first lines
    tainted: int | None = None
    seconds: float = 0.0
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def host_tools(arch: str) -> list[hostpkg.Tool]:
    """What the check needs on the host for a guest of `arch`."""
    guest = _guest(arch)
    tools = [hostpkg.Tool(guest.qemu, guest.package), hostpkg.Tool("dpkg-deb", "dpkg"),
             hostpkg.Tool("depmod", "kmod")]
    if arch == HOST_ARCH:  # the host's own busybox-static serves an amd64 guest
        tools.append(hostpkg.Tool("busybox", "busybox-static"))
    return tools


def _guest(arch: str) -> GuestMachine:
    try:
        return GUESTS[arch]
    except KeyError:
        raise BadInput(f"no QEMU guest for architecture {arch!r}: {', '.join(GUESTS)}") from None


def load_check(cache: Cache, arch: str, image_deb: Path, module: Path,
               progress: Progress = silent, timeout_s: float = 420) -> LoadResult:
    """Boot the kernel of `image_deb` and insmod `module` (and what it depends on)."""
    hostpkg.ensure(host_tools(arch), "guest tools")
    guest = _guest(arch)
    progress(f"load check: {arch} kernel")
    kernel = vm.prepare_guest_kernel(image_deb, cache.root)
    vm.check_module_matches(kernel, module)
    name = module.name
    result = LoadResult(arch=arch, release=kernel.release, module=name)
    busybox = _busybox(cache, arch)
    initramfs = _initramfs(cache, kernel, busybox, module)
    progress(f"load check: booting {kernel.release} under QEMU")
    console = cache.dir("load-check", f"{kernel.release}-{_digest(module.read_bytes())}.log")
    started = time.monotonic()
    text = _boot(guest, kernel, initramfs, console, timeout_s)
    result.seconds = round(time.monotonic() - started, 1)
    _read_console(text, result)
    return result


# -- the guest's userland ----------------------------------------------------------------------
def _busybox(cache: Cache, arch: str) -> Path:
    """A static busybox of the guest's architecture: the host's for amd64, else the
    busybox-static:<arch> package of the host's suites, unpacked into the cache."""
    if arch == HOST_ARCH:
        return Path(hostpkg.which("busybox") or "/bin/busybox").resolve()
    apt = Apt(cache, foreign_arches=(arch,))
    apt.update()
    name = f"busybox-static:{arch}"
    versions = apt.versions(name)
    record = apt.show(name, versions[0]) if versions else None
    if record is None:
        raise FetchError(f"the archive has no {name}: no userland for an {arch} guest")
    entry = cache.dir("busybox", f"{arch}-{record.version}")
    binary = entry / "busybox"
    if not binary.is_file():
        [deb] = apt.download([record], cache.dir("debs"))
        with publish_dir(entry) as tmp:
            proc = subprocess.run(
                ["bash", "-c", 'set -o pipefail; dpkg-deb --fsys-tarfile "$1" | '
                 'tar -xO ./bin/busybox > "$2"', "smcpatch", str(deb), str(tmp / "busybox")],
                capture_output=True, text=True, check=False)
            (tmp / "busybox").chmod(0o755)
            if proc.returncode != 0:
                raise FetchError(f"cannot unpack busybox from {deb.name}: "
                                 f"{proc.stderr.strip()[-200:]}")
    return binary


def _initramfs(cache: Cache, kernel: vm.GuestKernel, busybox: Path, module: Path) -> Path:
    """busybox, /init, and the module after the image's modules it depends on (decompressed)."""
    depends = [d for value in vm.modinfo(module.read_bytes(), "depends")
               for d in value.split(",") if d]
    closure = vm.module_closure(kernel, depends)
    modules = [(p.name.removesuffix(".xz").removesuffix(".zst"), vm.read_module_bytes(p))
               for p in closure]
    modules.append((module.name, module.read_bytes()))
    d, r, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries: list[tuple[str, int, bytes]] = [
        ("bin", d, b""), ("dev", d, b""), ("proc", d, b""), ("sys", d, b""), ("modules", d, b""),
        ("bin/busybox", x, busybox.read_bytes()), ("init", x, INIT.encode()),
        *((f"modules/{n}", r, data) for n, data in modules),
        ("modules.order", r, ("\n".join(n for n, _ in modules) + "\n").encode()),
    ]
    data = vm.cpio_newc(entries)
    out = cache.dir("load-check", f"initramfs-{kernel.release}-{_digest(data)}.cpio")
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# -- the boot ----------------------------------------------------------------------------------
def qemu_command(guest: GuestMachine, kernel: vm.GuestKernel, initramfs: Path) -> list[str]:
    cmdline = f"console={guest.console} panic=-1 rdinit=/init loglevel=4 quiet"
    return [guest.qemu, *guest.machine, "-accel", "tcg", "-smp", "1", "-m", "1024",
            "-nographic", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-kernel", str(kernel.boot_image), "-initrd", str(initramfs), "-append", cmdline]


def _boot(guest: GuestMachine, kernel: vm.GuestKernel, initramfs: Path, console: Path,
          timeout_s: float) -> str:
    """Run the guest until it powers off (or panics, or the time runs out: then QEMU is
    killed; an AArch64 guest that panicked waits for ever)."""
    cmd = qemu_command(guest, kernel, initramfs)
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if b"SMCLOAD-DONE" in _tail_bytes(console):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)  # poweroff's moment; then QEMU is stopped
                    break
                time.sleep(0.5)
        finally:
            kill_group(proc)
    text = console.read_text(errors="replace").replace("\r", "")
    if "SMCLOAD-DONE" not in text:
        why = ("the kernel panicked" if "Kernel panic" in text else
               f"no answer within {timeout_s:.0f} s" if proc.returncode in (None, -9, -15)
               else f"QEMU exited with {proc.returncode}")
        raise VmError(f"{guest.qemu}: the guest did not finish ({why}); console: {console}; "
                      f"its last line: {vm.console_tail(console, 1)[:200]}")
    return text


def _tail_bytes(path: Path, size: int = 65536) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read()


def _read_console(text: str, result: LoadResult) -> None:
    section = ""
    for raw in text.splitlines():
        line = re.sub(r"^\[\s*\d+\.\d+\]\s*", "", raw).strip()
        if line.startswith("SMCLOAD-INSMOD "):
            _, name, status = line.split()
            result.insmod[name] = int(status)
        elif line.startswith("SMCLOAD-TAINTED "):
            result.tainted = int(line.split()[1])
        elif line in ("SMCLOAD-PROC-MODULES", "SMCLOAD-DMESG", "SMCLOAD-DONE"):
            section = line
        elif section == "SMCLOAD-PROC-MODULES" and line:
            if line.split()[0] == Path(result.module).stem.replace("-", "_"):
                result.proc_modules.append(line)
        elif section == "SMCLOAD-DMESG" and line:
            if len(result.kernel_lines) < 12:
                result.kernel_lines.append(line)
            if COMPLAINTS.search(line):
                result.complaints.append(line)
    ours = result.insmod.get(result.module)
    result.loaded = ours == 0 and bool(result.proc_modules) and not result.complaints
    failed = [f"{n} (exit {s})" for n, s in result.insmod.items() if s != 0]
    if result.loaded:
        result.detail = (f"{result.module} loaded into {result.release} ({result.arch}, QEMU "
                         f"TCG): {result.proc_modules[0]}")
    else:
        result.detail = (f"{result.module} did not load into {result.release}: "
                         + "; ".join([*(f"insmod {f}" for f in failed), *result.complaints[:3]]
                                     or ["not in /proc/modules"]))
