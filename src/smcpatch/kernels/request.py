"""What a user asks for when they name kernels (--kernel, --arch, --flavour, --suite, --matrix,
or --source/--kdir), checked without the archive: cheap enough for the command line to build
before anything else is imported (kernels.resolve turns it into targets)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from .targets import check_arches, flavours_for
from .versions import parse

_SUITE = re.compile(r"^[a-z][a-z0-9.-]*$")


@dataclass(frozen=True)
class KernelRequest:
    """What the user asked for; `check()` refuses what cannot be meant before any work."""

    kernels: tuple[str, ...] = ()  # empty: the matrix's default run
    arches: tuple[str, ...] = ()
    flavour: str = ""
    suite: str | None = None
    matrix: Path | None = None
    source: Path | None = None  # a user's kernel tree (or a dir holding net/smc) ...
    kdir: Path | None = None  # ... and its prepared build directory

    @property
    def user_tree(self) -> bool:
        return self.source is not None or self.kdir is not None

    def check(self) -> tuple[str, ...]:
        """Every check that needs no archive: the versions readable, arches and flavours known,
        the suite a suite's name, options that do not go together refused. The arches."""
        if self.user_tree:
            if self.source is None or self.kdir is None:
                raise BadInput("--source and --kdir go together")
            given = [name for name, value in (("--kernel", self.kernels), ("--arch", self.arches),
                                              ("--flavour", self.flavour),
                                              ("--suite", self.suite)) if value]
            if given:
                raise BadInput(f"{', '.join(given)} cannot be used with --source/--kdir: your "
                               "tree's build directory says which kernel it is")
            return ()
        if self.suite is not None and not _SUITE.match(self.suite):
            raise BadInput(f"--suite {self.suite!r} is not a suite name (bookworm, trixie-security,"
                           " ...)")
        for kernel in self.kernels:
            if kernel != "all":
                parse(kernel)
        arches = check_arches(list(self.arches), self.flavour)
        flavours_for(self.flavour, arches)  # an unknown flavour: bad input now
        return arches
