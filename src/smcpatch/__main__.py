"""`smcpatch` (the console script) and `python -m smcpatch`.

The first instructions make the process safe to interrupt and to write from, before anything
heavy is imported: SIGTERM and Ctrl-C during start-up end it quietly (143, 130); standard
streams that were closed are /dev/null; text the terminal's encoding cannot show is escaped
instead of raised; a write to stdout that fails (a full disk, /dev/full) is one error line and
exit 2, then the rest is discarded. Then smcpatch.cli runs, and its error edge takes over the
signals. Only modules Python has already loaded are used here (and smcpatch.errors, which
imports nothing); `inv` runs the same `start()` from tasks.py.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from typing import NoReturn

from .errors import SmcpatchError


def _quit_starting(signum: int, frame: object) -> NoReturn:
    """A signal before the run's own handlers are in place: nothing started (no child, no temp
    file), nothing to say. Exit at once: an exception raised here could be swallowed by an
    import's `except:` and the signal lost."""
    os._exit(128 + signum)


def _open_standard_fds() -> None:
    """A closed stdin, stdout or stderr (`>&-`) becomes /dev/null: otherwise the next file
    smcpatch opens would take its number and receive what is printed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:  # Python found it closed at start-up (stdout and stderr: start)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin)


class _Output(io.FileIO):
    """stdout or stderr underneath Python's buffers: the first failed write (other than a reader
    gone, which stays BrokenPipeError for the quiet exit) is one error on stdout and nothing
    on stderr (there is nowhere left to say it); later writes are discarded, so that the final
    flush at exit has nothing left to fail on."""

    failed = False

    def write(self, data: object) -> int:
        size = len(memoryview(data))  # type: ignore[arg-type]
        if self.failed:
            return size
        try:
            return super().write(data) or 0  # type: ignore[arg-type]
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.failed = True
            if self.fileno() == 1:
                raise SmcpatchError("cannot write to standard output: "
                                    f"{exc.strerror or exc}") from None
            return size


def _guarded(fd: int, old: io.TextIOBase | None, line_buffering: bool) -> io.TextIOWrapper:
    if old is not None:
        old.flush()
    return io.TextIOWrapper(io.BufferedWriter(_Output(fd, "w", closefd=False)),
                            encoding=getattr(old, "encoding", None) or "utf-8",
                            errors="backslashreplace", line_buffering=line_buffering)


def start() -> None:
    """Before anything that can be interrupted or fail on a stream."""
    signal.signal(signal.SIGTERM, _quit_starting)
    signal.signal(signal.SIGINT, _quit_starting)
    _open_standard_fds()
    # PYTHONIOENCODING=ascii: what the encoding cannot hold is escaped, never raised
    tty = os.isatty(1)
    sys.stdout = _guarded(1, sys.stdout, line_buffering=tty)  # type: ignore[arg-type]
    sys.stderr = _guarded(2, sys.stderr, line_buffering=True)  # type: ignore[arg-type]


def main() -> NoReturn:
    start()
    from .cli import main as run  # rich, invoke, the CLI: start-up imports, interruptible

    run()


if __name__ == "__main__":
    main()
