"""Installing the host tools a stage needs (make, gcc-N, pahole, qemu, mmdebstrap, dkms, ...).

Every stage checks its own tools and says which package brings each; this is the one place that
installs them: as root, with the host's apt (installing needs no private configuration), after one
`apt-get update` per process, since a fresh machine's package lists may be empty or stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

_updated = False


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install_command(packages: Sequence[str]) -> str:
    """What to run by hand: named in every "missing tool" message."""
    return f"apt-get install -y --no-install-recommends {' '.join(packages)}"


def apt_install(packages: Sequence[str]) -> tuple[bool, str]:
    """Install `packages`; (succeeded, the tail of apt's output for the error message)."""
    global _updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:  # best effort: a stale index may still hold the packages
        subprocess.run(["apt-get", "-q", "update"], env=env, capture_output=True, timeout=1800,
                       check=False)
        _updated = True
    proc = subprocess.run(["apt-get", "-q", "install", "-y", "--no-install-recommends",
                           *packages], env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
    return proc.returncode == 0, tail
