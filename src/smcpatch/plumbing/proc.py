"""Child processes that die with the run: the one way smcpatch starts make, QEMU, apt-get, dkms,
mmdebstrap and the unpacking pipelines.

Each child starts a session of its own (so a terminal's Ctrl-C reaches smcpatch, which decides)
and its process group is registered twice: here, so that an interrupt kills every group at once
(kill_all) instead of waiting for builds to end, and with a small reaper process that outlives
nothing: it holds the read end of a pipe whose write end only smcpatch has, and when that pipe
closes (smcpatch exited, or was killed with SIGKILL) it kills every group still registered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

_REAPER = r"""
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    sign, pgid = line[0], int(line[1:])
    (groups.add if sign == "+" else groups.discard)(pgid)
for sig in (signal.SIGTERM, signal.SIGKILL):
    alive = False
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
    if not alive:
        break
    time.sleep(1)
"""

_lock = threading.Lock()
_live: dict[int, subprocess.Popen[Any]] = {}
_reaper: subprocess.Popen[str] | None = None


def _tell_reaper(line: str) -> None:
    """Register or forget a group with the reaper (started on first use)."""
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        _reaper = subprocess.Popen([sys.executable, "-S", "-c", _REAPER], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   text=True, start_new_session=True)
    assert _reaper.stdin is not None
    with contextlib.suppress(OSError):
        _reaper.stdin.write(line + "\n")
        _reaper.stdin.flush()


def spawn(args: list[str], *, stdin: int | IO[Any] | None = subprocess.DEVNULL,
          stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
          env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
          text: bool = False) -> subprocess.Popen[Any]:
    """Popen in a session of its own, registered until reaped (wait with `finish`)."""
    with _lock:
        proc = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                                cwd=cwd, text=text, start_new_session=True)
        _live[proc.pid] = proc
        _tell_reaper(f"+{proc.pid}")
    return proc


def _forget(proc: subprocess.Popen[Any]) -> None:
    with _lock:
        if _live.pop(proc.pid, None) is not None:
            _tell_reaper(f"-{proc.pid}")


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the child's whole process group (make's compilers, QEMU) and reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _forget(proc)


def finish(proc: subprocess.Popen[Any], timeout: float | None = None,
           input: str | bytes | None = None) -> tuple[Any, Any]:
    """communicate() with the child; on timeout or any interrupt its group is killed first."""
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    # the leader is gone; anything it left in its group goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _forget(proc)
    return out, err


def run(args: list[str], *, timeout: float | None = None, capture_output: bool = False,
        text: bool = False, input: str | bytes | None = None,
        stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
        env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
        check: bool = False) -> subprocess.CompletedProcess[Any]:
    """subprocess.run for children that must not outlive the run."""
    if capture_output:
        stdout = stderr = subprocess.PIPE
    proc = spawn(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                 stdout=stdout, stderr=stderr, env=env, cwd=cwd, text=text)
    out, err = finish(proc, timeout, input)
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def kill_all() -> int:
    """Kill every registered child group now (an interrupt); how many there were."""
    with _lock:
        procs = list(_live.values())
    for proc in procs:
        kill_group(proc)
    return len(procs)


@contextlib.contextmanager
def stopped_on_interrupt() -> Iterator[None]:
    """Around a thread pool whose workers run children: an interrupt (Ctrl-C, SIGTERM) kills
    every child group at once, so the pool's shutdown does not wait for a build to finish."""
    try:
        yield
    except BaseException:
        kill_all()
        raise
