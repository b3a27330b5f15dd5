"""The one QEMU launcher: every guest smcpatch boots (the load check of any arch, the benchmark,
the race) is started, watched and stopped here.

A guest is a real Debian kernel (guest.kernel) with an initramfs of ours (guest.initramfs); its
console goes to a file that the launcher reads while it runs. The guest says it is done with a
marker line; the launcher stops it then, or when the time runs out, or when it stalls: no new
console output for `stall_s` seconds (a guest that makes no progress is stopped within minutes,
with what it said last and, under -icount, how far its clock ran ahead of the host's). QEMU
never outlives the call (plumbing.proc).

The 9p guest (`run_script`) mounts the host's root read-only and a results share, and runs a
shell script the host wrote there (bench, race): the host's python3, pyperf, iproute2 and kmod
serve inside the guest. Modules are only ever loaded inside guests.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, VmError
from ..kernels.targets import HOST_ARCH
from ..plumbing import hostpkg, proc
from .kernel import GuestKernel


@dataclass(frozen=True)
class Machine:
    """How QEMU boots a Debian kernel of one architecture."""

    qemu: str  # the system emulator
    package: str  # the Debian package that brings it
    machine: tuple[str, ...]  # -machine/-cpu arguments
    console: str  # the kernel's console device


MACHINES: dict[str, Machine] = {
    "amd64": Machine("qemu-system-x86_64", "qemu-system-x86",
                     ("-machine", "q35", "-cpu", "max"), "ttyS0"),
    "arm64": Machine("qemu-system-aarch64", "qemu-system-arm",
                     ("-machine", "virt", "-cpu", "max"), "ttyAMA0"),
    "s390x": Machine("qemu-system-s390x", "qemu-system-misc",
                     ("-machine", "s390-ccw-virtio",), "ttysclp0"),
}
STALL_S = 150.0  # no console output for this long (host seconds): the guest is stuck
_GUEST_CLOCK = re.compile(r"\[guest\s+(\d+\.\d+)s\]|^\[\s*(\d+\.\d+)\]", re.M)


def machine_for(arch: str) -> Machine:
    try:
        return MACHINES[arch]
    except KeyError:
        raise BadInput(f"no QEMU guest for architecture {arch!r}: {', '.join(MACHINES)}") from None


def host_tools(arch: str = HOST_ARCH) -> list[hostpkg.Tool]:
    """QEMU for `arch`, and what unpacking a kernel image needs."""
    guest = machine_for(arch)
    return [hostpkg.Tool(guest.qemu, guest.package), hostpkg.Tool("dpkg-deb", "dpkg"),
            hostpkg.Tool("depmod", "kmod")]


def missing_host_tools(arch: str = HOST_ARCH) -> dict[str, str]:
    """{command: package} of every absent host tool of a guest of `arch`."""
    return {t.command: t.package for t in hostpkg.missing(host_tools(arch))}


def ensure_host_tools(commands: list[str] | None = None, arch: str = HOST_ARCH, *,
                      install: bool = True) -> None:
    """The guest's host tools (those of `commands` only, when given) present."""
    tools = [t for t in host_tools(arch) if commands is None or t.command in commands]
    hostpkg.ensure(tools, "guest tools", install=install)


def qemu_accel() -> str:
    """TCG unless SMCPATCH_QEMU_ACCEL=kvm: /dev/kvm may exist without working (nested
    virtualisation hangs the guest here), so KVM is opt-in."""
    return os.environ.get("SMCPATCH_QEMU_ACCEL", "tcg")


@dataclass(frozen=True)
class Share:
    """A host directory the guest mounts over virtio-9p."""

    tag: str
    path: Path
    readonly: bool = False


def qemu_command(arch: str, kernel: GuestKernel, initramfs: Path, *, memory_mb: int = 1024,
                 smp: int = 1, cmdline: str = "", shares: tuple[Share, ...] = (),
                 icount: str | None = None) -> list[str]:
    """The QEMU command line of every guest: the console on stdio (the launcher writes it to a
    file), no network, no reboot (a panic ends QEMU)."""
    guest = machine_for(arch)
    accel = qemu_accel() if arch == HOST_ARCH else "tcg"
    machine = [*guest.machine]
    if accel != "tcg" and "-cpu" in machine:
        machine[machine.index("-cpu") + 1] = "host"
    args = [guest.qemu, *machine, "-accel", accel, "-smp", str(smp), "-m", str(memory_mb),
            "-nographic", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-kernel", str(kernel.boot_image), "-initrd", str(initramfs),
            "-append", f"console={guest.console} panic=-1 rdinit=/init {cmdline}".strip()]
    for share in shares:
        ro = ",readonly=on" if share.readonly else ""
        args += ["-fsdev", f"local,id={share.tag},path={share.path}{ro},security_model=none"
                           + (",multidevs=remap" if share.readonly else ""),
                 "-device", f"virtio-9p-pci,fsdev={share.tag},mount_tag={share.tag}"]
    if arch == HOST_ARCH:
        args += ["-device", "virtio-rng-pci"]
    if icount and accel == "tcg":
        args += ["-icount", icount]
    return args


@dataclass
class Boot:
    """One guest run, as the launcher saw it."""

    console: Path
    text: str  # the console, \r removed
    wall_s: float  # QEMU start to exit
    marker_s: float | None  # QEMU start to the first `ready` marker, if one was given

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text.splitlines()[-lines:])


def boot(command: list[str], console: Path, *, done: str, timeout_s: float,
         ready: str | None = None, stall_s: float | None = STALL_S) -> Boot:
    """Run QEMU until the console shows `done` (then give poweroff a moment), the guest exits,
    the time runs out, or it stalls; raise VmError for the last two, with the console's tail."""
    known = [m for m in MACHINES.values() if m.qemu == command[0]]
    if known:
        hostpkg.ensure([hostpkg.Tool(command[0], known[0].package)], "guest tools")
    console.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    marker_s: float | None = None
    with open(console, "wb") as out:
        qemu = proc.spawn(command, stdout=out, stderr=out)
        try:
            size, last_change = 0, started
            while qemu.poll() is None:
                time.sleep(0.25)
                now = time.monotonic()
                grown = console.stat().st_size
                if grown != size:
                    size, last_change = grown, now
                    head = _tail_bytes(console)
                    if ready and marker_s is None and ready.encode() in head:
                        marker_s = now - started
                    if done.encode() in head:
                        _wait_quietly(qemu, 5)  # poweroff's moment; then QEMU is stopped
                        break
                if now - started > timeout_s:
                    raise VmError(f"guest timed out after {timeout_s:.0f} s (hang or too slow); "
                                  f"QEMU killed. {_diagnosis(console, now - started)}")
                if stall_s is not None and now - last_change > stall_s:
                    raise VmError(f"guest stalled: no console output for {now - last_change:.0f} s"
                                  f"; QEMU killed. {_diagnosis(console, now - started)}")
        finally:
            proc.kill_group(qemu)
    text = console.read_text(errors="replace").replace("\r", "")
    return Boot(console, text, time.monotonic() - started, marker_s)


def _wait_quietly(qemu: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while getattr(qemu, "poll")() is None and time.monotonic() < deadline:  # noqa: B009
        time.sleep(0.1)


def _tail_bytes(path: Path, size: int = 65536) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read()


def _diagnosis(console: Path, host_s: float) -> str:
    """What the console says last, and whether the guest's clock ran ahead of the host's
    (-icount sleep=off warps an idle guest's clock to its next timer: while it waits on the
    host, its timeouts fire early in host terms)."""
    text = _tail_bytes(console).decode(errors="replace").replace("\r", "")
    guest_s = max((float(a or b) for a, b in _GUEST_CLOCK.findall(text)), default=None)
    clock = ""
    if guest_s is not None and guest_s > 2 * host_s:
        clock = (f" The guest's clock read {guest_s:.0f} s after {host_s:.0f} s of host time: "
                 "it ran ahead while waiting on the host (a loaded host under -icount), so "
                 "timeouts inside the guest fired early.")
    tail = "\n".join(text.splitlines()[-25:])
    return f"Console ({console}):{clock}\n{tail}"


# -- the 9p guest: the host's root read-only, a results share, a script --------------------------
@dataclass
class GuestRun:
    returncode: int  # the guest script's exit code (125: init failed)
    wall_s: float  # QEMU start to exit
    boot_s: float | None  # QEMU start to "init done" (9p mounted, about to run the script)
    console: Path

    def console_tail(self, lines: int = 40) -> str:
        return console_tail(self.console, lines)


def console_tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def run_script(kernel: GuestKernel, initramfs: Path, share_dir: Path, guest_script: str, *,
               timeout_s: float, memory_mb: int = 2048, smp: int = 2, icount: str | None = None,
               cmdline_extra: str = "", stall_s: float | None = STALL_S) -> GuestRun:
    """Boot the amd64 guest with the host root and `share_dir` mounted, run `guest_script` (sh
    text, chrooted in the host root with the share at /run/smcb/results) and wait for it."""
    share_dir = Path(share_dir).resolve()
    if str(share_dir).startswith("/run/") or str(kernel.modules_root).startswith("/run/"):
        raise BadInput("results and cache must not live under /run (the guest mounts a tmpfs "
                       "there)")
    share_dir.mkdir(parents=True, exist_ok=True)
    (share_dir / "guest.sh").write_text(guest_script)
    console = share_dir / "console.log"
    cmdline = ("quiet loglevel=4 oops=panic panic_on_warn=0 nokaslr mitigations=off "
               f"tsc=reliable {cmdline_extra}").strip()
    command = qemu_command(HOST_ARCH, kernel, initramfs, memory_mb=memory_mb, smp=smp,
                           cmdline=cmdline, icount=icount,
                           shares=(Share("hostroot", Path("/"), readonly=True),
                                   Share("results", share_dir)))
    run = boot(command, console, done="SMCB-EXIT ", ready="SMCB-INIT-DONE", timeout_s=timeout_s,
               stall_s=stall_s)
    rc = next((int(line.split()[1]) for line in reversed(run.text.splitlines())
               if line.startswith("SMCB-EXIT ") and line.split()[1:2] != []
               and line.split()[1].lstrip("-").isdigit()), None)
    if rc is None:
        why = "kernel panic" if "Kernel panic" in run.text else "QEMU exited"
        raise VmError(f"guest did not finish ({why}). Console tail ({console}):\n{run.tail()}")
    if rc == 125:
        raise VmError(f"guest init failed. Console tail:\n{run.tail()}")
    return GuestRun(returncode=rc, wall_s=run.wall_s, boot_s=run.marker_s, console=console)
