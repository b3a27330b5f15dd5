"""Files in and out, the one way: what a user names is checked for its type before any work and
read with a limit that fits what it can be; what smcpatch writes for a user replaces only a
regular file (atomically), is written through a device or pipe, and nothing else; what it writes
into its own cache is published atomically under a temp name that is unmistakably its own.

Temp names: ``.smcpatch-tmp-<name>.<pid>.<start>.<random>`` beside what they become. Only such
names are ever swept (plumbing.cache.sweep_stale_temps), and only once their process is gone.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from ..errors import BadInput

TMP_PREFIX = ".smcpatch-tmp-"
KB, MB = 1024, 1024 * 1024


# -- temp names --------------------------------------------------------------------------------
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): with
    the pid it names one process for ever, so a reused pid is never taken for ours."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return text.rsplit(")", 1)[-1].split()[19]


_OWN_START = _start_time(os.getpid())


def temp_name(name: str) -> str:
    """A temp name for `name`: ours by its prefix, its owner's pid and start time."""
    return f"{TMP_PREFIX}{name}.{os.getpid()}.{_OWN_START}.{secrets.token_hex(4)}"


def temp_owner_alive(name: str) -> bool | None:
    """For one of our temp names: whether the process that made it still runs (None: not one
    of our temp names at all, which nothing may delete)."""
    if not name.startswith(TMP_PREFIX):
        return None
    parts = name.rsplit(".", 3)
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    pid, start = int(parts[1]), parts[2]
    if pid == os.getpid():
        return start == _OWN_START
    return _start_time(pid) == start


# -- writing our own files -----------------------------------------------------------------------
def write_atomic(path: Path, data: bytes | str) -> None:
    """Our own file (cache, results): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- writing what a user asked for ---------------------------------------------------------------
def check_output(path: Path, option: str) -> Path:
    """Refuse, before any work, an output path that cannot be written: a directory, a block
    device or socket, a path under a file, a place nothing can be created in (/proc)."""
    path = path.expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise BadInput(f"{option} {path}: {_why(exc)}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"{option} {path}: is a directory; give a file name")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise BadInput(f"{option} {path}: not a regular file, character device or pipe")
        if stat.S_ISREG(st.st_mode):
            _probe_dir(path.resolve().parent, option, path)
        return path
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{option} {path}: {parent} is not a directory")
    _probe_dir(parent, option, path)
    return path


def check_own_dir(path: Path, option: str, marker: str) -> Path:
    """A directory smcpatch writes into and may clean: absent, empty, or one it made (it holds
    `marker`); anything else is the user's and refused before any work."""
    path = path.expanduser()
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BadInput(f"{option} {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise BadInput(f"{option} {path} exists, is not empty and was not made by smcpatch: "
                       "choose a new or empty directory")
    check_output(path / marker, option)
    return path


def _probe_dir(directory: Path, option: str, path: Path) -> None:
    """Create and remove a temp file of ours: the one sure test that files can be made there."""
    probe = directory / temp_name("probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"{option} {path}: cannot create files in {directory}: "
                       f"{_why(exc)}") from None


def write_output(path: Path, data: bytes | str) -> None:
    """A file the user asked for (--json, --vex, --junit): a regular file (or a symlink to one)
    is replaced atomically, keeping its mode; a new one gets the mode the umask gives; a
    character device or a pipe is written through; anything else is refused."""
    payload = data.encode() if isinstance(data, str) else data
    path = path.expanduser()
    target = path.resolve() if path.is_symlink() else path
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        with open(target, "wb") as handle:  # write through: /dev/null, /dev/stdout, a pipe
            handle.write(payload)
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{path}: not a regular file, character device or pipe: not written")
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    tmp = target.with_name(temp_name(target.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


# -- reading what a user gave ---------------------------------------------------------------------
def read_input(path: Path, what: str, limit: int) -> bytes:
    """A user's input file, whole: a regular file (symlinks followed) no bigger than `limit`;
    a device, a pipe or a directory is refused before anything is read."""
    check_input(path, what, limit)
    with open(path.expanduser(), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while we looked
        raise BadInput(f"{path}: larger than a {what} can be ({_size(limit)} at most)")
    return data


def read_input_text(path: Path, what: str, limit: int) -> str:
    data = read_input(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a text file (not UTF-8): not a {what}") from None


def check_input(path: Path, what: str, limit: int | None = None) -> Path:
    """The checks of read_input without reading: the path exists, is a regular file, fits."""
    path = path.expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise BadInput(f"{path}: {_why(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{path}: not a regular file (a device, pipe or socket), not a {what}")
    if limit is not None and st.st_size > limit:
        raise BadInput(f"{path}: {_size(st.st_size)}, larger than a {what} can be "
                       f"({_size(limit)} at most)")
    if not os.access(path, os.R_OK):
        raise BadInput(f"{path}: permission denied")
    return path


def check_input_dir(path: Path, what: str) -> Path:
    path = path.expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise BadInput(f"{path}: {_why(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{path}: not a directory of {what}")
    return path


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a directory"
    return exc.strerror or str(exc)


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n / KB:.0f} KB"
