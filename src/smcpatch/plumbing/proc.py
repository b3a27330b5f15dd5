"""Child processes that must not outlive us: make and QEMU run in their own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the child's whole process group (make's compilers, QEMU) and reap the child."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
