"""A machine's root directory: its paths read as that machine sees them.

ROOT may be ``/`` or a mounted image. A path of the machine (``/etc/modprobe.d/x.conf``) is found
under ROOT with its symlinks followed inside ROOT: an absolute link target starts again at ROOT
and ``..`` never climbs above it, so a link in an image never reads the host's own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_LINKS = 40  # as the kernel's path walk: more is a loop


@dataclass(frozen=True)
class Root:
    path: Path  # absolute, resolved

    @classmethod
    def at(cls, path: Path) -> Root:
        return cls(path.expanduser().resolve())

    @property
    def is_host(self) -> bool:
        """ROOT is this machine's own `/`: its running kernel and /proc belong to it."""
        return self.path == Path("/")

    def resolve(self, machine_path: str) -> Path:
        """The host path of a path of the machine, symlinks followed inside ROOT. A missing part
        ends the walk (the result then does not exist); a link loop gives the looping link."""
        pending = list(PurePosixPath(machine_path).parts[1:])
        current, links = self.path, 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent if current != self.path else current
                continue
            candidate = current / part
            if not candidate.is_symlink():
                current = candidate
                continue
            links += 1
            if links > MAX_LINKS:
                return candidate
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                current, parts = self.path, list(target.parts[1:])
            else:
                parts = list(target.parts)
            pending = parts + pending
        return current

    def show(self, machine_path: str) -> str:
        """How a path is named to a person: as the machine names it, with ROOT in front when
        ROOT is not `/` (`/mnt/img/etc/modprobe.d/x.conf`)."""
        return machine_path if self.is_host else f"{self.path}{machine_path}"
