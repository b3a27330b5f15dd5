"""The QEMU guest: a real Debian kernel booted from its own linux-image .deb.

Host side only. The guest runs a minimal busybox initramfs that mounts the host root read-only over
9p (so the host's python3, pyperf, iproute2 and kmod are usable inside), a writable 9p share for
results, and runs the script the host put into that share. Modules are loaded only inside the guest.

Everything here is explicit-path based: give it the image .deb and a cache directory.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import stat
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data import GUEST_DIR
from ..errors import BadInput, VmError
from ..plumbing import hostpkg
from ..plumbing.cache import hash_file, publish_dir
from ..plumbing.proc import kill_group

INIT_SCRIPT = GUEST_DIR / "init.sh"

# the host tools of the guest stage: the command, and the Debian package that brings it
HOST_TOOLS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "depmod": "kmod",
    "modprobe": "kmod",
    "dpkg-deb": "dpkg",
    "gcc": "gcc",
    "/usr/include/arpa/inet.h": "libc6-dev",  # the guest helper is a userspace program
    "ip": "iproute2",
    "rdma": "iproute2",
    "zstd": "zstd",  # to decompress the kernel ahead of time (PVH boot)
}
# modules the initramfs needs to mount the 9p shares; virtio-pci is built into Debian's 6.12
# but a module of its 6.1 (then it comes first: 9pnet_virtio finds no channel without it)
INITRAMFS_MODULES = ("virtio_pci", "9p", "9pnet_virtio")


def _busybox_is_static(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    # a dynamic executable carries a PT_INTERP naming the loader
    return b"ld-linux" not in head and b"/lib64/ld" not in head


def host_tools(tools: Iterable[str] | None = None) -> list[hostpkg.Tool]:
    """The guest stage's tools (all of them by default) as hostpkg.Tools."""
    return [hostpkg.Tool(tool, HOST_TOOLS[tool],
                         _busybox_is_static if tool == "busybox" else None)
            for tool in (tools or HOST_TOOLS)]


def missing_host_tools(tools: Iterable[str] | None = None) -> dict[str, str]:
    """Return {tool: package} for every needed host tool that is absent."""
    return {t.command: t.package for t in hostpkg.missing(host_tools(tools))}


def ensure_host_tools(tools: Iterable[str] | None = None, *, install: bool = True) -> None:
    """The guest stage's host tools present, installed with apt-get when root (hostpkg)."""
    hostpkg.ensure(host_tools(tools), "host tools", install=install)


# ---------------------------------------------------------------------------------------------
# kernel image


@dataclass(frozen=True)
class GuestKernel:
    release: str
    vmlinuz: Path
    modules_root: Path  # modules_root/lib/modules/<release>/...
    # the same kernel, decompressed ahead of time: an ELF with a PVH entry that QEMU boots
    # directly (no firmware boot path, no in-guest decompression: ~4 s less under TCG)
    pvh_vmlinux: Path | None = None

    @property
    def boot_image(self) -> Path:
        return self.pvh_vmlinux or self.vmlinuz

    @property
    def modules_dir(self) -> Path:
        return self.modules_root / "lib" / "modules" / self.release


def _find_release(root: Path, image_deb: Path) -> str:
    mods = root / "lib" / "modules"
    releases = sorted(p.name for p in mods.iterdir()) if mods.is_dir() else []
    if len(releases) != 1:
        raise BadInput(f"{image_deb} is not a linux-image package (lib/modules holds {releases})")
    return releases[0]


def prepare_guest_kernel(image_deb: Path, cache_dir: Path) -> GuestKernel:
    """Unpack a linux-image .deb into the cache (never installed) and run depmod -b on it."""
    image_deb = Path(image_deb)
    if not image_deb.is_file():
        raise BadInput(f"kernel image package not found: {image_deb}")
    ensure_host_tools(["dpkg-deb", "depmod"])
    key = hash_file(image_deb)[:16]
    dest = Path(cache_dir) / "guest-kernel" / f"{image_deb.stem}-{key}"
    if not dest.is_dir():
        with publish_dir(dest) as tmp:
            proc = subprocess.run(["dpkg-deb", "-x", str(image_deb), str(tmp)],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise BadInput(f"cannot unpack {image_deb}: {proc.stderr.strip()}")
            release = _find_release(tmp, image_deb)
            proc = subprocess.run(["depmod", "-b", str(tmp), release],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise VmError(f"depmod -b {tmp} {release} failed: {proc.stderr.strip()}")
    release = _find_release(dest, image_deb)
    vmlinuz = dest / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.is_file():
        raise BadInput(f"{image_deb} carries no boot/vmlinuz-{release}")
    pvh = dest / "boot" / f"vmlinux-{release}.pvh"
    if not pvh.is_file():
        image = extract_pvh_vmlinux(vmlinuz)
        if image is not None:
            tmp_pvh = pvh.with_name(f".{pvh.name}.{os.getpid()}")
            tmp_pvh.write_bytes(image)
            tmp_pvh.replace(pvh)
    return GuestKernel(release=release, vmlinuz=vmlinuz, modules_root=dest,
                       pvh_vmlinux=pvh if pvh.is_file() else None)


XEN_ELFNOTE_PHYS32_ENTRY = 18


def _has_pvh_entry(elf: bytes) -> bool:
    """An ELF64 kernel with a Xen PHYS32_ENTRY note: QEMU can boot it directly (PVH)."""
    if elf[:5] != b"\x7fELF\x02" or len(elf) < 64:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset = struct.unpack_from("<IIQ", elf, phoff + i * phentsize)
        p_filesz, = struct.unpack_from("<Q", elf, phoff + i * phentsize + 0x20)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12: pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def extract_pvh_vmlinux(vmlinuz: Path) -> bytes | None:
    """Decompress a bzImage's payload (zstd, xz or gzip) into the ELF vmlinux, if it has a PVH
    entry; None when that is not possible (the bzImage is then booted as is)."""
    data = Path(vmlinuz).read_bytes()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    setup_sects = data[0x1F1] or 4
    pm_start = (setup_sects + 1) * 512
    off, length = struct.unpack_from("<II", data, 0x248)
    payload = data[pm_start + off: pm_start + off + length]
    try:
        if payload[:4] == b"\x28\xb5\x2f\xfd":  # zstd, le32 size appended
            proc = subprocess.run(["zstd", "-dcq"], input=payload[:-4], capture_output=True,
                                  timeout=120)
            image = proc.stdout
        elif payload[:6] == b"\xfd7zXZ\x00":  # xz, le32 size appended
            image = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload[:-4])
        elif payload[:2] == b"\x1f\x8b":
            image = gzip.decompress(payload)
        else:
            return None
    except (OSError, lzma.LZMAError, subprocess.SubprocessError, EOFError):
        return None
    size, = struct.unpack("<I", payload[-4:])
    if len(image) != size or not _has_pvh_entry(image):
        return None
    return image


# ---------------------------------------------------------------------------------------------
# module metadata


def read_module_bytes(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if path.name.endswith(".xz") or data[:6] == b"\xfd7zXZ\x00":
        try:
            data = lzma.decompress(data)
        except lzma.LZMAError as e:
            raise BadInput(f"{path}: corrupt xz module: {e}") from e
    if data[:4] != b"\x7fELF":
        raise BadInput(f"{path} is not a kernel module (no ELF header)")
    return data


def modinfo(data: bytes, key: str) -> list[str]:
    """Values of `key=` strings in a module's .modinfo (scanned, good enough for modinfo)."""
    out: list[str] = []
    needle = b"\x00" + key.encode() + b"="
    start = 0
    while (i := data.find(needle, start)) >= 0:
        j = data.find(b"\x00", i + len(needle))
        out.append(data[i + len(needle): j].decode(errors="replace"))
        start = j
    return out


def module_release(path: Path) -> str:
    vermagic = modinfo(read_module_bytes(path), "vermagic")
    if not vermagic:
        raise BadInput(f"{path} has no vermagic: not a kernel module")
    return vermagic[0].split()[0]


def check_module_matches(kernel: GuestKernel, ko: Path) -> None:
    """A module built for another release cannot be loaded: say so before booting."""
    if not Path(ko).is_file():
        raise BadInput(f"module not found: {ko}")
    rel = module_release(Path(ko))
    if rel != kernel.release:
        raise BadInput(
            f"{ko} was built for kernel {rel}, but the guest image is {kernel.release}: "
            "use the linux-image package of the same release"
        )


def _module_path(kernel: GuestKernel, name: str) -> Path:
    dep = kernel.modules_dir / "modules.dep"
    for line in dep.read_text().splitlines():
        path = line.split(":", 1)[0]
        base = path.rsplit("/", 1)[-1]
        if base.split(".ko")[0].replace("-", "_") == name.replace("-", "_"):
            return kernel.modules_dir / path
    raise VmError(f"module {name} not found in {dep}")


def _builtin(kernel: GuestKernel) -> set[str]:
    """The modules this kernel has built in (modules.builtin), by name."""
    path = kernel.modules_dir / "modules.builtin"
    if not path.is_file():
        return set()
    return {line.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
            for line in path.read_text().splitlines() if line}


def module_closure(kernel: GuestKernel, names: Sequence[str]) -> list[Path]:
    """The modules and their dependencies, dependencies first; built-in ones are left out."""
    order: list[Path] = []
    seen: set[str] = set(_builtin(kernel))

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path = _module_path(kernel, name)
        for dep in modinfo(read_module_bytes(path), "depends"):
            for d in filter(None, dep.split(",")):
                visit(d)
        order.append(path)

    for n in names:
        visit(n)
    return order


# ---------------------------------------------------------------------------------------------
# initramfs


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries (directories have empty data)."""
    out = bytearray()

    def pad4() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nm = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nm), 0)
        )
        out.extend(hdr.encode())
        out.extend(nm)
        pad4()
        out.extend(data)
        pad4()
    return bytes(out)


def build_initramfs(kernel: GuestKernel, cache_dir: Path) -> Path:
    """busybox-static + the 9p/virtio modules (decompressed) + our /init; cached by inputs hash."""
    ensure_host_tools(["busybox"])
    busybox = Path(hostpkg.which("busybox") or "/bin/busybox").resolve()
    mods = module_closure(kernel, INITRAMFS_MODULES)
    h = hashlib.sha256()
    for p in (busybox, INIT_SCRIPT, *mods):
        h.update(str(p).encode())
        h.update(p.read_bytes())
    out = Path(cache_dir) / "initramfs" / f"initramfs-{kernel.release}-{h.hexdigest()[:16]}.cpio"
    if out.is_file():
        return out
    d, r, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries: list[tuple[str, int, bytes]] = [
        ("bin", d, b""), ("dev", d, b""), ("proc", d, b""), ("sys", d, b""),
        ("newroot", d, b""), ("modules", d, b""),
        ("bin/busybox", x, busybox.read_bytes()),
        ("init", x, INIT_SCRIPT.read_bytes()),
    ]
    names = []
    for p in mods:
        name = p.name.removesuffix(".xz")
        names.append(name)
        entries.append((f"modules/{name}", r, read_module_bytes(p)))
    entries.append(("modules.order", r, ("\n".join(names) + "\n").encode()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(cpio_newc(entries))
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------------
# running the guest


@dataclass
class GuestRun:
    returncode: int  # the guest script's exit code (125: init failed)
    wall_s: float  # QEMU start to exit
    boot_s: float | None  # QEMU start to "init done" (9p mounted, about to run the script)
    console: Path
    timings: dict[str, float] = field(default_factory=dict)

    def console_tail(self, lines: int = 40) -> str:
        return console_tail(self.console, lines)


def console_tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def qemu_accel() -> str:
    """TCG unless SMCPATCH_QEMU_ACCEL=kvm: /dev/kvm may exist without working (nested
    virtualisation hangs the guest here), so KVM is opt-in."""
    return os.environ.get("SMCPATCH_QEMU_ACCEL", "tcg")


def qemu_command(kernel: GuestKernel, initramfs: Path, share_dir: Path, console: Path, *,
                 memory_mb: int = 2048, smp: int = 2, cmdline_extra: str = "",
                 icount: str | None = None) -> list[str]:
    accel = qemu_accel()
    cmdline = (
        "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic panic_on_warn=0 "
        f"rdinit=/init nokaslr mitigations=off tsc=reliable {cmdline_extra}"
    ).strip()
    return [
        "qemu-system-x86_64", "-accel", accel, "-machine", "q35", "-cpu", "max" if accel == "tcg"
        else "host", "-smp", str(smp), "-m", str(memory_mb),
        "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(kernel.boot_image), "-initrd", str(initramfs), "-append", cmdline,
        "-fsdev", "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=results,path={share_dir},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
        "-device", "virtio-rng-pci",
        *(["-icount", icount] if icount and accel == "tcg" else []),
    ]


def run_guest(kernel: GuestKernel, initramfs: Path, share_dir: Path, guest_script: str, *,
              timeout_s: float, memory_mb: int = 2048, smp: int = 2, icount: str | None = None,
              on_progress: object = None, cmdline_extra: str = "") -> GuestRun:
    """Boot the guest, run `guest_script` (sh text, run chrooted in the host root with the share at
    /run/smcb/results) and wait for it. Raises VmError on timeout or panic, with the console tail;
    QEMU never outlives this call (its whole process group is killed)."""
    ensure_host_tools(["qemu-system-x86_64"])
    share_dir = Path(share_dir).resolve()
    share_dir.mkdir(parents=True, exist_ok=True)
    (share_dir / "guest.sh").write_text(guest_script)
    console = share_dir / "console.log"
    console.unlink(missing_ok=True)
    cmd = qemu_command(kernel, initramfs, share_dir, console, memory_mb=memory_mb, smp=smp,
                       icount=icount, cmdline_extra=cmdline_extra)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    boot_s: float | None = None
    try:
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic() - t0
            if boot_s is None and console.exists() and b"SMCB-INIT-DONE" in console.read_bytes():
                boot_s = now
            if callable(on_progress):
                on_progress(now)
            if now > timeout_s:
                kill_group(proc)
                raise VmError(
                    f"guest timed out after {timeout_s:.0f} s (hang or too slow); QEMU killed. "
                    f"Console tail ({console}):\n{console_tail(console)}"
                )
    except BaseException:
        kill_group(proc)
        raise
    wall = time.monotonic() - t0
    qemu_out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    text = console.read_text(errors="replace") if console.exists() else ""
    if boot_s is None and "SMCB-INIT-DONE" in text:
        boot_s = wall
    rc = None
    for line in text.splitlines():
        if line.startswith("SMCB-EXIT "):
            rc = int(line.split()[1])
    if rc is None:
        why = "kernel panic" if "Kernel panic" in text else f"QEMU exited with {proc.returncode}"
        raise VmError(
            f"guest did not finish ({why}). {qemu_out.strip()}\n"
            f"Console tail ({console}):\n{console_tail(console)}"
        )
    if rc == 125:
        raise VmError(f"guest init failed. Console tail:\n{console_tail(console)}")
    return GuestRun(returncode=rc, wall_s=wall, boot_s=boot_s, console=console)
