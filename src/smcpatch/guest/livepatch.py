"""The livepatch proven in Debian's own kernel under QEMU (TCG): Debian's smc.ko loaded with its
dependencies from the image, then our livepatch; the guest waits for
/sys/kernel/livepatch/<name>/transition to reach 0 with `enabled` 1 and smc `patched`, then
disables the livepatch, waits for the kernel to drop it and removes the module. Times are the
guest's /proc/uptime. Nothing is loaded on the host.

Not yet here (docs/livepatch.md): SMC-R traffic through the switch, call counts in both
functions, the race churn and the latency on the patched kernel.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VmError
from ..plumbing import hostpkg
from ..plumbing.cache import Cache
from ..plumbing.progress import Progress, silent
from . import initramfs, loadcheck, machine
from .kernel import check_module_matches, prepare_guest_kernel

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
t() { cut -d' ' -f1 /proc/uptime; }
D=/sys/kernel/livepatch/@NAME@
echo "LP-BOOTED $(uname -r)"
for m in $(cat /modules.order); do
    insmod "/modules/$m"
    echo "LP-INSMOD $m $? $(t)"
done
i=0
while [ $i -lt 600 ]; do
    [ -d $D ] && [ "$(cat $D/transition)" = 0 ] && break
    usleep 100000; i=$((i+1))
done
r() { cat "$1" 2>/dev/null; }
S="enabled=$(r $D/enabled) transition=$(r $D/transition) patched=$(r $D/smc/patched)"
echo "LP-STATE $S at=$(t)"
echo "LP-SMC $(grep -c '^smc ' /proc/modules)"
echo 0 > $D/enabled
echo "LP-DISABLE $? $(t)"
i=0
while [ $i -lt 600 ] && [ -d $D ]; do usleep 100000; i=$((i+1)); done
echo "LP-GONE $([ -d $D ] && echo no || echo yes) $(t)"
# the kernel drops its last reference to the module after the sysfs directory goes (klp frees
# the patch from a work item): rmmod may say "in use" for a moment, so it is tried again
i=0
until rmmod @NAME@; do
    i=$((i+1)); [ $i -ge 50 ] && break; usleep 100000
done
echo "LP-RMMOD $([ $i -ge 50 ] && echo 1 || echo 0) $(t)"
echo "LP-LEFT $(grep -c '^@NAME@ ' /proc/modules)"
echo "LP-TAINTED $(cat /proc/sys/kernel/tainted)"
echo LP-DMESG
dmesg | grep -iE 'livepatch|@NAME@|smc|taint'
echo LP-DONE
poweroff -f
"""


@dataclass
class Proof:
    """What the guest showed, step by step (times: seconds of guest uptime)."""

    release: str
    module: str
    insmod: dict[str, int] = field(default_factory=dict)
    insmod_at: dict[str, float] = field(default_factory=dict)
    enabled: str = ""
    transition: str = ""
    smc_patched: str = ""
    transition_done_at: float | None = None
    smc_loaded: bool = False
    disable_status: int | None = None
    gone: bool = False
    gone_at: float | None = None
    rmmod_status: int | None = None
    left_loaded: bool = True
    tainted: int | None = None
    kernel_lines: list[str] = field(default_factory=list)
    complaints: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0
    console: str = ""

    @property
    def ok(self) -> bool:
        return (all(s == 0 for s in self.insmod.values()) and bool(self.insmod)
                and self.smc_loaded and self.enabled == "1" and self.transition == "0"
                and self.smc_patched == "1" and self.disable_status == 0 and self.gone
                and self.rmmod_status == 0 and not self.left_loaded and not self.complaints)

    @property
    def transition_seconds(self) -> float | None:
        start = self.insmod_at.get(self.module)
        if start is None or self.transition_done_at is None:
            return None
        return round(self.transition_done_at - start, 2)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "transition_seconds": self.transition_seconds}


def prove(cache: Cache, image_deb: Path, ko: Path, progress: Progress = silent,
          timeout_s: float = 600) -> Proof:
    """Boot the kernel of `image_deb`; load smc and the livepatch `ko`; enable, disable, remove."""
    hostpkg.ensure(loadcheck.host_tools("amd64"), "guest tools")
    kernel = prepare_guest_kernel(image_deb, cache.root)
    check_module_matches(kernel, ko)
    name = ko.stem
    proof = Proof(release=kernel.release, module=ko.name)
    image = initramfs.with_modules(
        cache.dir("livepatch-proof"), kernel, initramfs.busybox(cache, "amd64"),
        INIT.replace("@NAME@", name).encode(), ["smc"], [(ko.name, ko.read_bytes())])
    console = cache.dir("livepatch-proof", f"{kernel.release}-{name}.log")
    proof.console = str(console)
    progress(f"livepatch proof: booting {kernel.release} under QEMU")
    command = machine.qemu_command("amd64", kernel, image, cmdline="loglevel=4 quiet")
    run = machine.boot(command, console, done="LP-DONE", timeout_s=timeout_s)
    if "LP-DONE" not in run.text:
        why = "the kernel panicked" if "Kernel panic" in run.text else "QEMU exited"
        raise VmError(f"the livepatch guest did not finish ({why}); console: {console}")
    proof.boot_seconds = round(run.wall_s, 1)
    read_console(run.text, proof)
    return proof


def read_console(text: str, proof: Proof) -> None:
    dmesg = False
    for raw in text.splitlines():
        line = re.sub(r"^\[\s*\d+\.\d+\]\s*", "", raw).strip()
        words = line.split()
        if not words:
            continue
        if words[0] == "LP-INSMOD" and len(words) == 4:
            proof.insmod[words[1]] = int(words[2])
            proof.insmod_at[words[1]] = float(words[3])
        elif words[0] == "LP-STATE":
            state = dict(w.split("=", 1) for w in words[1:] if "=" in w)
            proof.enabled, proof.transition = state.get("enabled", ""), state.get("transition", "")
            proof.smc_patched = state.get("patched", "")
            proof.transition_done_at = _float(state.get("at"))
        elif words[0] == "LP-SMC":
            proof.smc_loaded = words[1:] == ["1"]
        elif words[0] == "LP-DISABLE" and len(words) == 3:
            proof.disable_status = int(words[1])
        elif words[0] == "LP-GONE" and len(words) == 3:
            proof.gone, proof.gone_at = words[1] == "yes", _float(words[2])
        elif words[0] == "LP-RMMOD" and len(words) == 3:
            proof.rmmod_status = int(words[1])
        elif words[0] == "LP-LEFT":
            proof.left_loaded = words[1:] != ["0"]
        elif words[0] == "LP-TAINTED":
            proof.tainted = int(words[1])
        elif words[0] == "LP-DMESG":
            dmesg = True
        elif words[0] == "LP-DONE":
            dmesg = False
        elif dmesg:
            if len(proof.kernel_lines) < 30:
                proof.kernel_lines.append(line)
            if loadcheck.COMPLAINTS.search(line):
                proof.complaints.append(line)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
