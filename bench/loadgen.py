"""A CPU, memory and I/O load generator (Debian's stress-ng) around a run, for the checks that the
project holds on a busy machine: both cores kept busy, memory and the disk pressed."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smcpatch.plumbing import hostpkg, proc  # noqa: E402

# every core busy, 1 GiB of memory churned, and the disk written and synced
STRESS = ["stress-ng", "--cpu", "0", "--cpu-load", "100", "--vm", "1", "--vm-bytes", "1G",
          "--hdd", "1", "--hdd-bytes", "512M", "--io", "1", "--timeout", "0", "--quiet"]


@contextlib.contextmanager
def load_generator(workdir: Path) -> Iterator[list[str]]:
    """stress-ng running in `workdir` (its --hdd files) until the block ends; its command."""
    hostpkg.ensure([hostpkg.Tool("stress-ng", "stress-ng")], "the load generator")
    workdir.mkdir(parents=True, exist_ok=True)
    stress = proc.spawn([shutil.which("stress-ng") or "stress-ng", *STRESS[1:]], cwd=workdir)
    try:
        yield STRESS
    finally:
        stress.terminate()  # stress-ng stops its workers and removes its files on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            stress.wait(timeout=20)
        proc.kill_group(stress)
        for leftover in workdir.glob("tmp-stress-ng-*"):
            shutil.rmtree(leftover, ignore_errors=True)
