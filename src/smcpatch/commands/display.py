"""How a long command shows its work: one progress reporter per target, a line when a target is
done, and messages (installs, waits). The CLI's rich implementation is smcpatch.outputs.terminal."""

from __future__ import annotations

from typing import Protocol

from ..pipeline.report import TargetReport
from ..plumbing.progress import Progress, silent


class Display(Protocol):
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
