"""The one initramfs builder: a newc cpio of busybox-static (of the guest's architecture), an
/init and modules (decompressed, in load order), cached by its content."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from ..data import GUEST_DIR
from ..errors import FetchError
from ..kernels.targets import HOST_ARCH
from ..plumbing import hostpkg, unpack
from ..plumbing.apt import Apt
from ..plumbing.cache import Cache, publish_dir
from ..plumbing.files import write_atomic
from .kernel import GuestKernel, module_closure, read_module_bytes

INIT_SCRIPT = GUEST_DIR / "init.sh"  # the 9p guest's /init (bench, race)
# modules the 9p guest needs to mount its shares; virtio-pci is built into Debian's 6.12 but a
# module of its 6.1 (then it comes first: 9pnet_virtio finds no channel without it)
SHARE_MODULES = ("virtio_pci", "9p", "9pnet_virtio")
_DIR, _FILE, _EXEC = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755


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


def build(out_dir: Path, release: str, busybox: Path, init: bytes,
          modules: list[tuple[str, bytes]]) -> Path:
    """busybox, /init, modules/<name> and modules.order (the load order); cached by content."""
    entries: list[tuple[str, int, bytes]] = [
        ("bin", _DIR, b""), ("dev", _DIR, b""), ("proc", _DIR, b""), ("sys", _DIR, b""),
        ("newroot", _DIR, b""), ("modules", _DIR, b""),
        ("bin/busybox", _EXEC, busybox.read_bytes()), ("init", _EXEC, init),
        *((f"modules/{name}", _FILE, data) for name, data in modules),
        ("modules.order", _FILE, ("\n".join(name for name, _ in modules) + "\n").encode()),
    ]
    data = cpio_newc(entries)
    out = Path(out_dir) / f"initramfs-{release}-{hashlib.sha256(data).hexdigest()[:16]}.cpio"
    if not out.is_file():
        write_atomic(out, data)
    return out


def with_modules(out_dir: Path, kernel: GuestKernel, busybox: Path, init: bytes,
                 names: list[str], extra: list[tuple[str, bytes]] = ()) -> Path:  # type: ignore[assignment]
    """An initramfs with the kernel's modules `names` and their dependencies (built-in ones left
    out), then `extra` modules of ours."""
    closure = [(p.name.removesuffix(".xz").removesuffix(".zst"), read_module_bytes(p))
               for p in module_closure(kernel, names)]
    return build(out_dir, kernel.release, busybox, init, [*closure, *extra])


def share_initramfs(kernel: GuestKernel, cache_dir: Path) -> Path:
    """The 9p guest's initramfs (bench, race): the host's busybox-static, init.sh and the
    modules that mount the shares."""
    return with_modules(Path(cache_dir) / "initramfs", kernel, busybox(None, HOST_ARCH),
                        INIT_SCRIPT.read_bytes(), list(SHARE_MODULES))


def busybox(cache: Cache | None, arch: str) -> Path:
    """A static busybox of the guest's architecture: the host's for amd64, else the
    busybox-static:<arch> package of the host's suites, unpacked into the cache."""
    if arch == HOST_ARCH:
        hostpkg.ensure([hostpkg.Tool("busybox", "busybox-static", _is_static)], "guest tools")
        return Path(hostpkg.which("busybox") or "/bin/busybox").resolve()
    assert cache is not None
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
            unpack.run_shell('set -o pipefail; dpkg-deb --fsys-tarfile "$1" | '
                             'tar -xO ./bin/busybox > "$2"', [str(deb), str(tmp / "busybox")],
                             what=f"unpack busybox from {deb.name}", where=tmp)
            (tmp / "busybox").chmod(0o755)
    return binary


def _is_static(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    # a dynamic executable carries a PT_INTERP naming the loader
    return b"ld-linux" not in head and b"/lib64/ld" not in head
