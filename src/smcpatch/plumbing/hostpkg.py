"""Host tools (make, gcc-N, pahole, qemu, mmdebstrap, dkms, ...): checked and installed here.

Each stage says which tools it needs as `Tool`s; `ensure` checks them and, as root, installs the
missing ones with the host's apt (installing needs no private configuration). This is the only
module that runs apt-get on the host. A run works out every tool it needs before it starts parallel
work and calls `ensure` once; a process-wide lock makes any later call wait for an install under way
and then find the tool present, so parallel targets never race each other for dpkg's lock. Another
package manager holding dpkg's lock is waited for (apt's DPkg::Lock::Timeout), and we say so.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import ToolMissing
from . import proc

DPKG_FRONTEND_LOCK = "/var/lib/dpkg/lock-frontend"
LOCK_TIMEOUT_S = 900  # how long apt-get waits for another package manager's dpkg lock
APT_TIMEOUT_S = 3600

_install_lock = threading.Lock()
_updated = False


@dataclass(frozen=True)
class Tool:
    """A command the host must have, the Debian package that brings it, and an optional extra
    check of the file found (busybox must be the static one)."""

    command: str  # a command on PATH, or an absolute path of a file the package brings
    package: str
    accept: Callable[[str], bool] | None = None

    def present(self) -> bool:
        if self.command.startswith("/"):
            return os.path.exists(self.command)
        path = which(self.command)
        return path is not None and (self.accept is None or self.accept(path))


def which(command: str) -> str | None:
    """shutil.which, also looking in the sbin directories a non-login root shell may lack."""
    return shutil.which(command, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")



def install_command(packages: Sequence[str]) -> str:
    """What to run by hand: named in every "missing tool" message."""
    return f"apt-get install -y --no-install-recommends {' '.join(packages)}"


def missing(tools: Iterable[Tool]) -> list[Tool]:
    seen: dict[str, Tool] = {}
    for tool in tools:
        if tool.command not in seen and not tool.present():
            seen[tool.command] = tool
    return list(seen.values())


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure(tools: Iterable[Tool], purpose: str = "host tools", *, install: bool = True,
           say: Callable[[str], None] = _stderr) -> None:
    """Every tool present, or installed now (as root, one apt-get install); else ToolMissing
    naming the exact apt-get command."""
    wanted = list(tools)
    if not missing(wanted):
        return
    with _install_lock:  # a parallel caller installing the same tools: wait, then look again
        absent = missing(wanted)
        if not absent:
            return
        packages = sorted({t.package for t in absent})
        names = ", ".join(t.command for t in absent)
        command = install_command(packages)
        if not install or os.geteuid() != 0:
            raise ToolMissing(f"missing {purpose} ({names}): run `{command}` as root")
        if not shutil.which("apt-get"):
            raise ToolMissing(f"missing {purpose} ({names}) and no apt-get to install them: "
                              f"install them with `{command}` or your system's package manager")
        say(f"installing {purpose}: {command}")
        installed, tail = apt_install(packages, say)
        if not installed:
            reason = (tail.splitlines() or ["apt-get failed"])[-1]
            raise ToolMissing(f"`{command}` failed: {reason}")
        still = missing(absent)
        if still:  # installed, yet not found: say which, not a crash later in make
            raise ToolMissing(f"{', '.join(t.command for t in still)} not found on PATH after "
                              f"`{command}`: check PATH ({os.environ.get('PATH', '')})")


def dpkg_lock_holder() -> bool:
    """True when another process holds dpkg's frontend lock (apt, dpkg, unattended-upgrades)."""
    try:
        fd = os.open(DPKG_FRONTEND_LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # dpkg and apt use fcntl (POSIX) locks
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def apt_install(packages: Sequence[str],
                say: Callable[[str], None] = _stderr) -> tuple[bool, str]:
    """Install `packages`; (succeeded, the tail of apt's output for the error message)."""
    global _updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT_S}"]
    if dpkg_lock_holder():
        say(f"waiting for dpkg's lock ({DPKG_FRONTEND_LOCK}): another package manager is "
            f"running (up to {LOCK_TIMEOUT_S} s) ...")
    if not _updated:  # a fresh machine's lists may be empty; best effort: a stale one may do
        proc.run(["apt-get", "-q", *wait, "update"], env=env, capture_output=True,
                 timeout=APT_TIMEOUT_S, what="apt-get update")
        _updated = True
    done = proc.run(["apt-get", "-q", *wait, "install", "-y", "--no-install-recommends",
                     *packages], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                    what="apt-get install")
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
    return done.returncode == 0, tail
