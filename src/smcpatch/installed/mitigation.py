"""smcpatch's own modprobe.d file: every load of smc stopped until a fixed kernel runs.

`install smc /bin/false` makes modprobe run /bin/false instead of loading smc, by name, through
an alias, or as another module's dependency (smc_diag); `blacklist smc` also stops the aliases
for tools that read blacklists only. The file is ours by its first line: only such a file is
rewritten or removed; anything else at that path is the administrator's and is refused. Nothing
here unloads a module: a loaded smc stays until `rmmod smc` or the next boot.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..cve import CVE, TITLE
from ..errors import BadInput
from ..plumbing import files
from .root import Root

PATH = "/etc/modprobe.d/smcpatch-cve-2025-40168.conf"
MARKER = f"# smcpatch: {CVE} mitigation"
CONTENT = f"""{MARKER} (written by `smcpatch host --mitigate`)
# smcpatch rewrites or removes this file only while its first line says so.
# {CVE}: {TITLE}.
# Every load of the SMC module (smc) through modprobe is stopped until a fixed Debian kernel
# runs: `install` runs /bin/false instead of loading smc (by name, through the net-pf-43 alias
# that socket(AF_SMC) requests, or as a dependency of smc_diag); `blacklist` stops its aliases.
# An smc loaded before this file was written stays loaded until `rmmod smc` or a reboot.
# Undo: `smcpatch host --unmitigate`, or delete this file.
install smc /bin/false
blacklist smc
"""
MODE = 0o644
READ_LIMIT = 64 * 1024

Action = Literal["mitigate", "unmitigate"]
Outcome = Literal["written", "unchanged", "removed", "absent"]


@dataclass(frozen=True)
class Change:
    action: Action
    outcome: Outcome
    path: str  # as a person names it (ROOT in front when not /)

    def describe(self) -> str:
        return {
            "written": f"wrote {self.path}: every modprobe of smc is stopped",
            "unchanged": f"{self.path} is already in place (unchanged)",
            "removed": f"removed {self.path}: smc loads as before",
            "absent": f"{self.path} is not there: nothing to remove",
        }[self.outcome]


def state(root: Root) -> Literal["absent", "ours", "current", "foreign"]:
    """What is at the path now: nothing, an earlier file of ours, exactly ours, or not ours
    (another content, a symlink, a directory: the administrator's)."""
    path = _host_path(root)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "foreign"
    if not stat.S_ISREG(st.st_mode):
        return "foreign"
    try:
        with open(path, "rb") as handle:
            data = handle.read(READ_LIMIT)
    except OSError:
        return "foreign"
    if data == CONTENT.encode():
        return "current"
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    return "ours" if first.startswith(MARKER) else "foreign"


def check(root: Root, action: Action) -> None:
    """Refuse, before any work, what cannot be done: a file that is not ours, a directory
    smcpatch may not write in (not root, a read-only image)."""
    shown = root.show(PATH)
    current = state(root)
    if current == "foreign":
        raise BadInput(f"{shown} exists and was not written by smcpatch (its first line is not "
                       f"{MARKER!r}): not {'overwritten' if action == 'mitigate' else 'removed'}")
    if action == "unmitigate" and current == "absent":
        return
    if not (action == "mitigate" and current == "current"):
        files.check_output(_host_path(root), f"--{action}")


def apply(root: Root, action: Action) -> Change:
    """Write or remove our file (check() first): written atomically with mode 0644, the same
    bytes left alone; removed only when its first line marks it as ours."""
    check(root, action)
    current, host, shown = state(root), _host_path(root), root.show(PATH)
    if action == "mitigate":
        if current == "current":
            return Change(action, "unchanged", shown)
        files.write_atomic(host, CONTENT)
        os.chmod(host, MODE)
        return Change(action, "written", shown)
    if current == "absent":
        return Change(action, "absent", shown)
    host.unlink()
    return Change(action, "removed", shown)


def _host_path(root: Root) -> Path:
    directory, name = PATH.rsplit("/", 1)
    return root.resolve(directory) / name
