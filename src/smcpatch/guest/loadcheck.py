"""Prove a built module loads into its own kernel: boot Debian's kernel of the module's
architecture in QEMU (TCG) and insmod the module with its dependencies from the same image.

The guest is self-contained, so it works for any architecture: a busybox-static of the guest's
architecture (from the archive, never run on the host), the module closure, and an /init that
insmods, then prints /proc/modules, the taint flags and the kernel's words about the modules.
Nothing is loaded on the host.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VmError
from ..kernels.targets import HOST_ARCH
from ..plumbing import hostpkg
from ..plumbing.cache import Cache
from ..plumbing.progress import Progress, silent
from . import initramfs, machine
from .kernel import check_module_matches, modinfo, prepare_guest_kernel

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
    tools = machine.host_tools(arch)
    if arch == HOST_ARCH:  # the host's own busybox-static serves an amd64 guest
        tools.append(hostpkg.Tool("busybox", "busybox-static"))
    return tools


def load_check(cache: Cache, arch: str, image_deb: Path, module: Path,
               progress: Progress = silent, timeout_s: float = 420) -> LoadResult:
    """Boot the kernel of `image_deb` and insmod `module` (and what it depends on)."""
    hostpkg.ensure(host_tools(arch), "guest tools")
    progress(f"load check: {arch} kernel")
    kernel = prepare_guest_kernel(image_deb, cache.root)
    check_module_matches(kernel, module)
    result = LoadResult(arch=arch, release=kernel.release, module=module.name)
    depends = [d for value in modinfo(module.read_bytes(), "depends")
               for d in value.split(",") if d]
    image = initramfs.with_modules(cache.dir("load-check"), kernel,
                                   initramfs.busybox(cache, arch), INIT.encode(), depends,
                                   [(module.name, module.read_bytes())])
    progress(f"load check: booting {kernel.release} under QEMU")
    console = cache.dir("load-check", f"{kernel.release}-{_digest(module.read_bytes())}.log")
    command = machine.qemu_command(arch, kernel, image, cmdline="loglevel=4 quiet")
    try:
        run = machine.boot(command, console, done="SMCLOAD-DONE", timeout_s=timeout_s)
    except VmError as exc:
        raise VmError(f"{machine.machine_for(arch).qemu}: the guest did not finish: "
                      f"{exc.one_line()[:300]}; console: {console}") from exc
    if "SMCLOAD-DONE" not in run.text:
        why = "the kernel panicked" if "Kernel panic" in run.text else "QEMU exited"
        raise VmError(f"{machine.machine_for(arch).qemu}: the guest did not finish ({why}); "
                      f"console: {console}; its last line: {run.tail(1)[:200]}")
    result.seconds = round(run.wall_s, 1)
    _read_console(run.text, result)
    return result


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


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
