"""Child processes that die with the run: the one way smcpatch starts any program (make, QEMU,
apt-get, dkms, patch, gcc --version ...), and the signals that end the run.

`run()` is the short call (every child has a timeout; a timeout or, with check=True, a failure is
the caller's smcpatch error in one line); `spawn()` is for a child the caller watches itself
with its own clock and ends with `kill_group()` (QEMU and its stall detection).

Each child starts a session of its own (so a terminal's Ctrl-C reaches smcpatch, which decides)
and its process group is registered twice: here, so that an interrupt kills every group at once
(kill_all) instead of waiting for builds to end, and with a small reaper process that outlives
nothing: it holds the read end of a pipe whose write end only smcpatch has, and when that pipe
closes (smcpatch exited, or was killed with SIGKILL) it kills every group still registered.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from ..errors import SmcpatchError

# what callers pass for stdin/stdout/stderr, so that no module outside plumbing imports subprocess
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL

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
# set when an interrupt killed every group: a worker thread may start no child after that (one
# started a moment later would run on while the pool's shutdown waits for it)
_stopping = False
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
          text: bool = False, errors: str | None = None) -> subprocess.Popen[Any]:
    """Popen in a session of its own, registered until reaped (wait with `finish`)."""
    with _lock:
        if _stopping and threading.current_thread() is not threading.main_thread():
            raise SmcpatchError(f"{os.path.basename(args[0])} not started: the run is stopping")
        proc = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                                cwd=cwd, text=text, errors=errors, start_new_session=True)
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


def run(args: list[str], *, timeout: float, what: str | None = None,
        error: type[SmcpatchError] = SmcpatchError, check: bool = False,
        capture_output: bool = False, text: bool = False, errors: str | None = None,
        input: str | bytes | None = None, stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
        env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
        limit: int | None = None) -> subprocess.CompletedProcess[Any]:
    """Run a child to its end, within `timeout` seconds: subprocess.run for children that must
    not outlive the run.

    A timeout kills the child's group and raises `error` naming `what` (default: the program);
    with check=True so does a non-zero exit, with the tail of its stderr. With `limit` (bytes
    mode), at most limit + 1 bytes of stdout are read, then the child is killed: a caller that
    gets more than `limit` refuses the output, and a decompression bomb is never held whole."""
    what = what or os.path.basename(args[0])
    if capture_output:
        stdout = stderr = subprocess.PIPE
    if stdin is None:
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    try:
        child = spawn(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                      text=text, errors=errors)
        if limit is None:
            out, err = finish(child, timeout, input)
        else:
            out, err = _finish_capped(child, timeout, limit)
    except subprocess.TimeoutExpired:
        raise error(f"{what} timed out after {timeout:g} s") from None
    result = subprocess.CompletedProcess(args, child.returncode, out, err)
    if check and result.returncode != 0:
        raise error(f"{what} failed (exit {result.returncode}): {_tail(err)}")
    return result


def _tail(err: str | bytes | None) -> str:
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else (err or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no error output"


def _finish_capped(child: subprocess.Popen[Any], timeout: float,
                   limit: int) -> tuple[bytes, bytes]:
    """Read stdout up to limit + 1 bytes (stderr up to 1 MiB) within the timeout; the group is
    killed when the cap is reached, on timeout or on any interrupt."""
    assert child.stdout is not None and child.stderr is not None
    out_fd, err_fd = child.stdout.fileno(), child.stderr.fileno()
    caps = {out_fd: limit + 1, err_fd: 1 << 20}
    got: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            for fd in caps:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map() and len(got[out_fd]) <= limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(child.args, timeout)
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fd)
                    got[key.fd] += chunk[:max(0, caps[key.fd] - len(got[key.fd]))]
        if len(got[out_fd]) > limit:
            kill_group(child)
        child.wait(max(0.0, deadline - time.monotonic()))
    except BaseException:
        kill_group(child)
        raise
    finally:
        child.stdout.close()
        child.stderr.close()
    kill_group(child)  # reaped: anything the leader left in its group goes, and it is forgotten
    return bytes(got[out_fd]), bytes(got[err_fd])


def kill_all(stopping: bool = False) -> int:
    """Kill every registered child group now; how many there were. `stopping` (an interrupt):
    worker threads start no child from now on."""
    global _stopping
    with _lock:
        _stopping = _stopping or stopping
        procs = list(_live.values())
    for proc in procs:
        kill_group(proc)
    return len(procs)


# -- the signals that end the run ------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: children killed, temp dirs removed, one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C. A subclass, not KeyboardInterrupt itself: Python 3.11 marks a KeyboardInterrupt
    that passes through exec() of a string (dataclasses do that at import) as unhandled and
    kills the process with SIGINT at exit, after the edge has reported it and chosen 130."""


def _on_signal(signum: int, frame: object) -> None:
    raise Terminated() if signum == signal.SIGTERM else Interrupted()


def handle_signals() -> None:
    """From here on SIGTERM raises Terminated and SIGINT Interrupted (both KeyboardInterrupt),
    for the error edge to catch (only the main thread may set handlers: elsewhere this does
    nothing)."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)


def ignore_signals() -> None:
    """The run is ending on its own terms (reporting an interrupt, or exiting): SIGTERM and
    SIGINT no longer change that (SIGKILL still does, and the reaper still sees it)."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The signal an exception stands for, if any: Python 3.11 wraps an exception raised while a
    class is made (a signal during an import) in RuntimeError("Error calling __set_name__ ...")."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return None


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell's code for the signal that ended the run: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def stopped_on_interrupt() -> Iterator[None]:
    """Around a thread pool whose workers run children: an interrupt (Ctrl-C, SIGTERM) kills
    every child group at once, so the pool's shutdown does not wait for a build to finish, and
    no worker starts another while it waits."""
    global _stopping
    with _lock:
        _stopping = False  # a new pool: an interrupt of an earlier one (in-process) is over
    try:
        yield
    except BaseException as exc:
        kill_all(stopping=isinstance(exc, KeyboardInterrupt)
                 or interrupt_behind(exc) is not None)
        raise
