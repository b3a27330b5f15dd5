"""The kernels installed on a machine and the smc.ko each would load.

A kernel is a directory `lib/modules/<release>` (or `usr/lib/modules/<release>` on a merged-/usr
system; the same directory seen twice is one kernel). Its smc.ko is the one modprobe would load:
the path its modules.dep names for smc (a DKMS build in updates/ wins over Debian's own), else
the first found in updates/ and then anywhere under the directory, any compression. The package
that owns it and its version come from dpkg's database under ROOT: `var/lib/dpkg/info/*.list`
list each package's files, `var/lib/dpkg/status` gives versions (python-debian reads it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..plumbing import debmeta
from ..plumbing.files import MB
from .root import Root

MODULE_DIRS = ("/lib/modules", "/usr/lib/modules")
SMC_FILE = re.compile(r"smc\.ko(\.xz|\.zst|\.gz)?")
DEP_LIMIT = 64 * MB  # modules.dep of a distribution kernel is under 1 MB
LIST_LIMIT = 64 * MB  # a package's file list (linux-image: ~4000 lines, 300 KB)
STATUS_LIMIT = 256 * MB  # dpkg's status of a large system is a few MB
DPKG_INFO, DPKG_STATUS = "/var/lib/dpkg/info", "/var/lib/dpkg/status"


@dataclass
class InstalledKernel:
    release: str  # uname -r of the kernel: 6.1.0-50-amd64
    directory: str  # its modules directory, as the machine names it
    module: str | None = None  # the smc.ko modprobe would load (machine path); None: no SMC
    module_file: Path | None = None  # the same, on this host
    builtin: bool = False  # SMC built into the kernel (modules.builtin): no module to judge
    has_smc_diag: bool = False  # smc_diag.ko, which depends on smc, is there too
    package: str | None = None  # the dpkg package that owns the module (or the kernel)
    version: str | None = None
    arch: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def debian_module(self) -> bool:
        """The module is the kernel's own (kernel/net/smc), not a build in updates/ or extra/."""
        return self.module is not None and "/kernel/net/smc/" in self.module


def installed_kernels(root: Root) -> list[InstalledKernel]:
    """Every kernel with a modules directory under ROOT, sorted by release."""
    seen: dict[str, InstalledKernel] = {}
    places: set[Path] = set()
    for base in MODULE_DIRS:
        for name in root.listdir(base):
            directory = f"{base}/{name}"
            if name in seen or root.kind(directory) != "dir":
                continue
            place = root.resolve(directory)
            if place in places:
                continue
            places.add(place)
            seen[name] = _kernel(root, name, directory)
    return [seen[name] for name in sorted(seen)]


def _kernel(root: Root, release: str, directory: str) -> InstalledKernel:
    kernel = InstalledKernel(release, directory)
    kernel.builtin = _builtin(root, directory)
    names = root.files_under(directory)
    kernel.has_smc_diag = any(n.rsplit("/", 1)[-1].startswith("smc_diag.ko") for n in names)
    relative, note = _smc_path(root, directory, names)
    if relative is not None:
        kernel.module = f"{directory}/{relative}"
        kernel.module_file = root.resolve(kernel.module)
    if note:
        kernel.notes = (note,)
    return kernel


def _builtin(root: Root, directory: str) -> bool:
    text = _read(root, f"{directory}/modules.builtin", DEP_LIMIT, "a modules.builtin") or ""
    return any(_modname(line) == "smc" for line in text.splitlines())


def _smc_path(root: Root, directory: str, names: list[str]) -> tuple[str | None, str]:
    """smc.ko relative to the modules directory, as modprobe would pick it; and a note when
    modules.dep and the files disagree. A candidate counts when it is a regular file as the
    machine sees it (its links followed inside ROOT); one that is a FIFO, device or directory is
    still returned (never read: host judges it undecided, not as a kernel without SMC)."""
    named_smc = [rel for rel in names if SMC_FILE.fullmatch(rel.rsplit("/", 1)[-1])]
    kinds = {rel: root.kind(f"{directory}/{rel}") for rel in named_smc}
    found = sorted((rel for rel in named_smc if kinds[rel] == "file"),
                   key=lambda rel: (not rel.startswith("updates/"), rel))
    odd = [rel for rel in named_smc if kinds[rel] in ("dir", "other")]
    if odd and not found:  # named smc.ko but nothing to judge: undecided, never "no SMC"
        return odd[0], (f"{odd[0]} is not a regular file (a FIFO, device or directory): it "
                        "cannot be judged")
    dep = _read(root, f"{directory}/modules.dep", DEP_LIMIT, "a modules.dep")
    named = None
    for line in (dep or "").splitlines():
        head = line.split(":", 1)[0].strip()
        if _modname(head) == "smc":
            named = head
            for base in _spellings(directory):  # depmod may write absolute paths
                named = named.removeprefix(base + "/")
            break
    if named is not None and named in found:
        return named, ""
    if named is not None:
        return (found[0] if found else None,
                f"modules.dep names {named}, which is not there: modprobe cannot load smc")
    if found and dep is not None:
        return found[0], (f"{found[0]} is not in modules.dep (depmod has not run since it was "
                          "installed): modprobe cannot load it until depmod runs")
    return (found[0] if found else None), ""


def _modname(path: str) -> str:
    """kmod's path_to_modname: the file name up to its first dot, `-` read as `_`."""
    return path.rsplit("/", 1)[-1].split(".", 1)[0].replace("-", "_")


# -- dpkg ----------------------------------------------------------------------------------------
def add_packages(root: Root, kernels: list[InstalledKernel]) -> None:
    """Each kernel's owning package and version, from dpkg's database under ROOT (left None
    where dpkg does not know the file: a kernel built and installed by hand)."""
    wanted = {k.release: _owner_candidates(k) for k in kernels}
    owners = dpkg_owners(root, {p for paths in wanted.values() for p in paths})
    for kernel in kernels:
        kernel.package = next((owners[p] for p in wanted[kernel.release] if p in owners), None)
    names = {k.package for k in kernels if k.package}
    status = _read(root, DPKG_STATUS, STATUS_LIMIT, "dpkg's status file")
    packages = debmeta.dpkg_status(status, names) if status and names else {}
    for kernel in kernels:
        package = packages.get(kernel.package or "")
        if package is not None:
            kernel.version, kernel.arch = package.version, package.arch


def _owner_candidates(kernel: InstalledKernel) -> list[str]:
    """Files whose owner is the kernel's package: the module itself, else the kernel's image
    and the lists its package ships beside the modules."""
    return ([kernel.module] if kernel.module else []) + [
        f"/boot/vmlinuz-{kernel.release}", f"{kernel.directory}/modules.builtin",
        f"{kernel.directory}/modules.order"]


def dpkg_owners(root: Root, paths: set[str]) -> dict[str, str]:
    """{path: package} for the paths dpkg's file lists name. A merged-/usr system names a file
    under /lib or /usr/lib as its package shipped it: both spellings are looked for."""
    spellings = {alias: path for path in paths for alias in _spellings(path)}
    needles = {alias: f"\n{alias}\n".encode() for alias in spellings}
    owners: dict[str, str] = {}
    for name in root.listdir(DPKG_INFO):
        if not name.endswith(".list"):
            continue
        data = root.read(f"{DPKG_INFO}/{name}", LIST_LIMIT, "a dpkg file list")
        if not data or b"/modules/" not in data and b"/boot/" not in data:
            continue
        data = b"\n" + data + b"\n"
        for alias, needle in needles.items():
            if needle in data:
                owners.setdefault(spellings[alias], name[:-5].split(":", 1)[0])
    return owners


def _spellings(path: str) -> list[str]:
    if path.startswith("/usr/lib/"):
        return [path, path.removeprefix("/usr")]
    if path.startswith("/lib/"):
        return [path, "/usr" + path]
    return [path]


def _read(root: Root, machine_path: str, limit: int, what: str) -> str | None:
    """A file of the machine as text (None: not there, or not a regular file); one larger
    than `limit` is refused (root.read): a file this size is not what it claims to be."""
    data = root.read(machine_path, limit, what)
    return None if data is None else data.decode("utf-8", "replace")
