"""The kernel a guest boots: a real Debian kernel unpacked from its own linux-image .deb (never
installed; depmod -b on the copy), with the PVH entry QEMU boots directly when it has one; and the
metadata of its modules (release, dependencies, what is built in)."""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, VmError
from ..plumbing import hostpkg, proc, unpack
from ..plumbing.cache import hash_file, publish_dir
from ..plumbing.files import write_atomic


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
    hostpkg.ensure([hostpkg.Tool("dpkg-deb", "dpkg"), hostpkg.Tool("depmod", "kmod")],
                   "guest tools")
    key = hash_file(image_deb)[:16]
    dest = Path(cache_dir) / "guest-kernel" / f"{image_deb.stem}-{key}"
    if not dest.is_dir():
        with publish_dir(dest) as tmp:
            unpack.run(["dpkg-deb", "-x", str(image_deb), str(tmp)],
                       what=f"unpack {image_deb.name}", where=tmp)
            release = _find_release(tmp, image_deb)
            done = proc.run(["depmod", "-b", str(tmp), release], capture_output=True,
                            text=True, timeout=600, what="depmod", error=VmError)
            if done.returncode:
                raise VmError(f"depmod -b {tmp} {release} failed: {done.stderr.strip()}")
    release = _find_release(dest, image_deb)
    vmlinuz = dest / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.is_file():
        raise BadInput(f"{image_deb} carries no boot/vmlinuz-{release}")
    pvh = dest / "boot" / f"vmlinux-{release}.pvh"
    if not pvh.is_file():
        image = extract_pvh_vmlinux(vmlinuz)
        if image is not None:
            write_atomic(pvh, image)
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
            done = proc.run(["zstd", "-dcq"], input=payload[:-4], capture_output=True,
                            timeout=120, what="zstd", error=VmError)
            image = bytes(done.stdout)
        elif payload[:6] == b"\xfd7zXZ\x00":  # xz, le32 size appended
            image = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload[:-4])
        elif payload[:2] == b"\x1f\x8b":
            image = gzip.decompress(payload)
        else:
            return None
    except (OSError, lzma.LZMAError, VmError, EOFError):
        return None
    size, = struct.unpack("<I", payload[-4:])
    if len(image) != size or not _has_pvh_entry(image):
        return None
    return image


# -- module metadata ---------------------------------------------------------------------------
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
