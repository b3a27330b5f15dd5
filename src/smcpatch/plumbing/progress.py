"""How stages report progress: a message, and for measurable work how much of how much is done.

Stages call `progress("download 223 MB", done=bytes_so_far, total=bytes)`; the CLI turns that into
rich progress bars. Library users may pass any callable of this shape, or `silent`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..pipeline.report import TargetReport


class Progress(Protocol):
    def __call__(self, message: str, done: float | None = None,
                 total: float | None = None) -> None: ...


def silent(message: str, done: float | None = None, total: float | None = None) -> None:
    """A Progress that reports nothing."""


def prefixed(progress: Progress, prefix: str) -> Progress:
    def report(message: str, done: float | None = None, total: float | None = None) -> None:
        progress(f"{prefix}{message}", done, total)

    return report


class Poller:
    """Call `sample()` every `interval` seconds in a thread while a blocking step runs."""

    def __init__(self, sample: Callable[[], None], interval: float = 0.25) -> None:
        self._sample, self._interval = sample, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            # a file may vanish between listing and stat: the next sample will do
            with contextlib.suppress(OSError):
                self._sample()

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Display(Protocol):
    """How a long command shows its work: one progress reporter per target, a line when a
    target is done, and messages (installs, waits). The CLI's rich one is outputs.terminal."""

    def reporter(self, label: str) -> Progress: ...

    def done(self, label: str, report: TargetReport) -> None: ...

    def say(self, message: str) -> None: ...


class Quiet:
    """A Display that shows nothing (library use, benchmarks)."""

    def reporter(self, label: str) -> Progress:
        return silent

    def done(self, label: str, report: TargetReport) -> None:
        pass

    def say(self, message: str) -> None:
        pass


QUIET = Quiet()
