"""What the running kernel says of itself: its release, the modules loaded now, its command
line and whether module loading is switched off. Only `/` has a running kernel: for another ROOT
nothing here applies (`Runtime.absent()`). Tests build a `Runtime` by hand instead of reading
/proc, so a loaded smc or a kernel command line can be faked without touching the host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_LIMIT = 4 * 1024 * 1024  # /proc/modules of thousands of modules is well under this


@dataclass(frozen=True)
class Runtime:
    """None where the running kernel could not be asked (no /proc/modules in a container)."""

    release: str | None  # uname -r
    loaded: frozenset[str] | None  # module names in /proc/modules
    cmdline: str | None  # /proc/cmdline
    modules_disabled: bool | None  # /proc/sys/kernel/modules_disabled
    smc_srcversion: str | None = None  # /sys/module/smc/srcversion of the loaded smc

    @classmethod
    def absent(cls) -> Runtime:
        """ROOT is not `/`: no kernel runs from it."""
        return cls(None, None, None, None)

    @classmethod
    def of_host(cls, proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> Runtime:
        modules = _read(proc / "modules")
        disabled = _read(proc / "sys/kernel/modules_disabled")
        return cls(release=os.uname().release,
                   loaded=None if modules is None else frozenset(
                       line.split(" ", 1)[0] for line in modules.splitlines() if line),
                   cmdline=_read(proc / "cmdline"),
                   modules_disabled=None if disabled is None else disabled.strip() == "1",
                   smc_srcversion=(_read(sys / "module/smc/srcversion") or "").strip() or None)

    def kernel_params(self, name: str) -> list[str]:
        """The values of a kernel parameter, comma lists split (`module_blacklist=a,b`); the
        kernel reads `-` and `_` in parameter names alike. Arguments after `--` go to init."""
        words = (self.cmdline or "").split()
        if "--" in words:
            words = words[:words.index("--")]
        wanted = name.replace("-", "_")
        values: list[str] = []
        for word in words:
            key, has_value, value = word.partition("=")
            if has_value and key.replace("-", "_") == wanted:
                values += [v.strip('"') for v in value.split(",") if v.strip('"')]
        return values


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(PROC_LIMIT).decode("utf-8", "replace")
    except OSError:
        return None
