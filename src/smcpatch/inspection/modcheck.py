"""Will the target kernel load the module: vermagic and modversions (``__versions`` CRCs)
against the kernel's Module.symvers, and the module's metadata these checks read."""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import InspectError
from ..plumbing.files import MB, read_input
from .elf import ElfObject, guard
from .model import FixResult, FunctionEvidence, ModuleInfo

SYMVERS_LIMIT = 64 * MB  # Debian's is 1-2 MB


def module_info(elf: ElfObject, path: Path, evidence: FunctionEvidence,
                fixes: list[FixResult] | None = None) -> ModuleInfo:
    """The module's metadata (.modinfo, __versions, debug sections) around ``evidence`` and
    the per-fix verdicts."""
    modinfo = elf.modinfo()
    name = modinfo.get("name") or _stem(path)
    return ModuleInfo(
        path=str(path),
        name=name,
        vermagic=modinfo.get("vermagic"),
        srcversion=modinfo.get("srcversion"),
        has_dwarf=elf.has_dwarf,
        stripped=elf.stripped,
        modversions=read_modversions(elf),
        evidence=evidence,
        fixes=list(fixes or []),
    )


def read_modversions(elf: ElfObject) -> dict[str, int]:
    """symbol -> CRC the module was built against (__versions, or the 6.13+ extended tables)."""
    order = elf.machine.byteorder
    out: dict[str, int] = {}
    sec = elf.by_name.get("__versions")
    if sec is not None:
        raw = elf.section_bytes(sec)
        for pos in range(0, len(raw) - 63, 64):  # struct modversion_info {ulong crc; char[56]}
            (crc,) = struct.unpack_from(order + "Q", raw, pos)
            name = raw[pos + 8 : pos + 64].split(b"\0", 1)[0].decode("utf-8", "replace")
            if name:
                out[name] = crc & 0xFFFFFFFF
    names = elf.by_name.get("__version_ext_names")
    crcs = elf.by_name.get("__version_ext_crcs")
    if names is not None and crcs is not None:  # CONFIG_EXTENDED_MODVERSIONS (6.13+)
        symbols = elf.section_bytes(names).split(b"\0")
        raw_crcs = elf.section_bytes(crcs)[: crcs.size // 4 * 4]
        values = [v for (v,) in struct.iter_unpack(order + "I", raw_crcs)]
        for name_b, crc in zip(symbols, values, strict=False):
            if name_b:
                out.setdefault(name_b.decode("utf-8", "replace"), crc)
    return out


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".xz", ".gz", ".zst"):
        name = name.removesuffix(suffix)
    for suffix in (".ko", ".o"):
        name = name.removesuffix(suffix)
    return name


def check_vermagic(info: ModuleInfo, kernel_release: str) -> tuple[bool, str]:
    """Whether the module was built for ``kernel_release`` (vermagic starts with "<release> ")."""
    if info.vermagic is None:
        return False, f"{info.path} has no vermagic (not a kernel module?)"
    if info.vermagic.startswith(kernel_release + " "):
        return True, f"vermagic {info.vermagic.strip()!r} matches {kernel_release}"
    found = info.vermagic.split(" ", 1)[0]
    return False, (
        f"vermagic {info.vermagic.strip()!r} is for {found}, not {kernel_release}:"
        " the kernel would refuse the module"
    )


def read_module_symvers(path: Path) -> dict[str, int]:
    """symbol -> CRC from a kernel's Module.symvers (``0xcrc<TAB>symbol<TAB>module<TAB>...``)."""
    label = str(path)
    out: dict[str, int] = {}
    with guard(label):
        text = read_input(Path(path), "Module.symvers", SYMVERS_LIMIT).decode("utf-8", "replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                # the file's content is never echoed: a file named by mistake may hold secrets
                raise InspectError(f"{label}:{lineno}: not a Module.symvers line (expected "
                                   "0xCRC<TAB>symbol<TAB>module...): not a Module.symvers")
            try:
                crc = int(fields[0], 16)
            except ValueError:
                raise InspectError(f"{label}:{lineno}: the first field is not a hexadecimal CRC: "
                                   "not a Module.symvers") from None
            out[fields[1]] = crc
    return out


def check_modversions(info: ModuleInfo, symvers: dict[str, int]) -> tuple[bool, list[str]]:
    """Compare the module's __versions CRCs with the kernel's Module.symvers."""
    problems: list[str] = []
    if not info.modversions:
        if any(symvers.values()):
            problems.append(
                f"{info.path} has no __versions section but the kernel exports versioned"
                " symbols (CONFIG_MODVERSIONS): build it against the kernel's headers"
            )
        return not problems, problems
    for sym, crc in sorted(info.modversions.items()):
        if sym not in symvers:
            problems.append(f"{sym}: not exported by the kernel (missing from Module.symvers)")
        elif symvers[sym] != crc:
            problems.append(
                f"{sym}: CRC {crc:#010x} in the module, {symvers[sym]:#010x} in the kernel"
            )
    return not problems, problems
