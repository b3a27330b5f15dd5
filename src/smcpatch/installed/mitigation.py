"""smcpatch's own modprobe.d file: every load of smc stopped until a fixed kernel runs.

`install smc /bin/false` makes modprobe run /bin/false instead of loading smc, by name, through
an alias, or as another module's dependency (smc_diag); `blacklist smc` also stops the aliases
for tools that read blacklists only. The file is ours only while it is byte for byte what some
`--mitigate` wrote (this version's text or an earlier one's): only then is it rewritten or
removed. A file of ours that someone has changed since (a line added or edited) is kept, and the
lines that are not ours are named; anything else at that path is the administrator's and is
refused. Every step goes through the root resolver (installed.root): the directory is walked
inside ROOT and the file is read, written and removed relative to it, never through a link.
Nothing here unloads a module: a loaded smc stays until `rmmod smc` or the next boot.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from typing import Literal

from ..cve import CVE, TITLE
from ..errors import BadInput
from ..plumbing.files import temp_name
from .root import Root, read_at

DIRECTORY, NAME = "/etc/modprobe.d", "smcpatch-cve-2025-40168.conf"
PATH = f"{DIRECTORY}/{NAME}"
MARKER = f"# smcpatch: {CVE} mitigation"
_BODY = f"""# {CVE}: {TITLE}.
# Every load of the SMC module (smc) through modprobe is stopped until a fixed Debian kernel
# runs: `install` runs /bin/false instead of loading smc (by name, through the net-pf-43 alias
# that socket(AF_SMC) requests, or as a dependency of smc_diag); `blacklist` stops its aliases.
# An smc loaded before this file was written stays loaded until `rmmod smc` or a reboot.
# Undo: `smcpatch host --unmitigate`, or delete this file.
install smc /bin/false
blacklist smc
"""
CONTENT = (f"{MARKER} (written by `smcpatch host --mitigate`)\n"
           "# smcpatch rewrites or removes this file only while it is byte for byte its own.\n"
           + _BODY)
# what earlier versions wrote: still ours, rewritten or removed like the current text
EARLIER = (f"{MARKER} (written by `smcpatch host --mitigate`)\n"
           "# smcpatch rewrites or removes this file only while its first line says so.\n"
           + _BODY,)
MODE = 0o644
READ_LIMIT = 64 * 1024
SHOWN_LINES = 3  # lines not ours named in the refusal (and how many more)

Action = Literal["mitigate", "unmitigate"]
Outcome = Literal["written", "unchanged", "removed", "absent"]
State = Literal["absent", "ours", "current", "changed", "foreign"]


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


def state(root: Root) -> State:
    """What is at the path now: nothing, an earlier file of ours, exactly ours, a file of ours
    changed since, or not ours (another content, a symlink, a directory: the administrator's)."""
    return _look(root)[0]


def _look(root: Root) -> tuple[State, bytes]:
    if root.kind(DIRECTORY) != "dir":
        return "absent", b""
    with root.directory(DIRECTORY) as fd:
        return _state_at(root, fd)


def _state_at(root: Root, fd: int) -> tuple[State, bytes]:
    try:
        st = os.stat(NAME, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return "absent", b""
    except OSError:
        return "foreign", b""
    if not stat.S_ISREG(st.st_mode):
        return "foreign", b""
    try:
        data = read_at(fd, NAME, READ_LIMIT, "smcpatch's modprobe.d file", root.show(PATH))
    except BadInput:  # far larger than ours
        return "foreign", b""
    if data is None:
        return "foreign", b""
    if data == CONTENT.encode():
        return "current", data
    if data in (text.encode() for text in EARLIER):
        return "ours", data
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    return ("changed" if first.startswith(MARKER) else "foreign"), data


def lines_not_ours(data: bytes) -> list[tuple[int, str]]:
    """(line number, text) of each line no version of smcpatch wrote."""
    ours = {line for text in (CONTENT, *EARLIER) for line in text.splitlines()}
    lines = data.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(n, line) for n, line in enumerate(lines, start=1) if line not in ours]


def _changed(shown: str, data: bytes, action: Action) -> BadInput:
    extra = lines_not_ours(data)
    said = "; ".join(f"line {n}: {text!r}" for n, text in extra[:SHOWN_LINES])
    if len(extra) > SHOWN_LINES:
        said += f"; and {len(extra) - SHOWN_LINES} more"
    what = (f"lines that are not ours ({said})" if extra else
            "lines of ours edited or removed")
    verb = "overwritten" if action == "mitigate" else "removed"
    return BadInput(f"{shown} was written by smcpatch and changed since: it has {what}: kept, "
                    f"not {verb}; remove those lines (or the file) yourself")


def check(root: Root, action: Action) -> None:
    """Refuse, before any work, what cannot be done: a file that is not ours or was changed
    since we wrote it, a directory smcpatch may not write in (not root, a read-only image)."""
    shown = root.show(PATH)
    current, data = _look(root)
    if current == "foreign":
        raise BadInput(f"{shown} exists and was not written by smcpatch (its first line is not "
                       f"{MARKER!r}): not {'overwritten' if action == 'mitigate' else 'removed'}")
    if current == "changed":
        raise _changed(shown, data, action)
    if action == "unmitigate" and current == "absent":
        return
    if not (action == "mitigate" and current == "current"):
        root.probe_write(DIRECTORY, f"--{action}")


def apply(root: Root, action: Action) -> Change:
    """Write or remove our file (check() first), relative to the directory's descriptor: written
    atomically with mode 0644, the same bytes left alone; removed only when it is byte for byte
    ours (looked at again just before)."""
    check(root, action)
    shown = root.show(PATH)
    if action == "unmitigate" and root.kind(DIRECTORY) != "dir":
        return Change(action, "absent", shown)
    with root.directory(DIRECTORY, create=action == "mitigate") as fd:
        current, data = _state_at(root, fd)
        if current == "changed":  # changed since check(): refused now
            raise _changed(shown, data, action)
        if current == "foreign":
            raise BadInput(f"{shown} was replaced while smcpatch looked at it: not touched")
        if action == "mitigate":
            if current == "current":
                return Change(action, "unchanged", shown)
            _write_at(fd, CONTENT.encode())
            return Change(action, "written", shown)
        if current == "absent":
            return Change(action, "absent", shown)
        os.unlink(NAME, dir_fd=fd)
        return Change(action, "removed", shown)


def _write_at(fd: int, data: bytes) -> None:
    """Our file, atomically: a temp name of ours in the same directory, renamed over it."""
    tmp = temp_name(NAME)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600, dir_fd=fd)
    try:
        with os.fdopen(out, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), MODE)
        os.replace(tmp, NAME, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise
