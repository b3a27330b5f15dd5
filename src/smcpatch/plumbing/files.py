"""Files in and out, the one way: what a user names is checked for its type before any work and
read with a limit that fits what it can be; what smcpatch writes for a user replaces only a
regular file (atomically), is written through a device or pipe, and nothing else; what it writes
into its own cache is published atomically under a temp name that is unmistakably its own.

Temp names: ``.smcpatch-tmp-<name>.<pid>.<start>.<random>`` beside what they become. Only such
names are ever swept (plumbing.cache.sweep_stale_temps), and only once their process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import sys
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


NAME_MAX = 255


def temp_name(name: str) -> str:
    """A temp name for `name`: ours by its prefix, its owner's pid and start time; `name` is
    shortened as needed so that the temp name itself fits a filesystem's 255 bytes."""
    tail = f".{os.getpid()}.{_OWN_START}.{secrets.token_hex(4)}"
    room = NAME_MAX - len(TMP_PREFIX) - len(tail)
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room])
    return f"{TMP_PREFIX}{name}{tail}"


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
# An output path is one of three kinds, decided the same way when it is checked (before any work)
# and when it is written: a regular file (or a new name) replaced atomically; a stream (a
# character device such as /dev/null, a pipe, or one of our own descriptors named as /dev/stdout,
# /dev/fd/N) written through; anything else, a symlink to a file above all, refused: what a
# link points at is not ours to replace.
FILE, STREAM, FD = "file", "stream", "fd"
_FD_NAMES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_DIRS = ("/dev/fd", "/proc/self/fd", "/proc/thread-self/fd", f"/proc/{os.getpid()}/fd")


def user_path(value: str, option: str) -> Path:
    """A path a user typed for `option`: an empty one is refused (never taken for "." or for
    no option at all), `~` and `~user` expanded (an unknown user is bad input)."""
    if not value:
        raise BadInput(f"{option}: an empty path; give a file name")
    if "\0" in value:
        raise BadInput(f"{option}: a path cannot hold a NUL character")
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~nosuchuser
        user = value.split("/", 1)[0]
        raise BadInput(f"{option} {value}: {user}: no such user (no home directory to "
                       "expand)") from None


def _own_fd(path: Path) -> int | None:
    """The descriptor of ours a path names (/dev/stdout, /dev/fd/1, /proc/self/fd/1): written
    to directly, at its own offset, never reopened and truncated."""
    text = str(path)
    if text in _FD_NAMES:
        return _FD_NAMES[text]
    parent, _, name = text.rpartition("/")
    if parent in _FD_DIRS and name.isdigit():
        return int(name)
    return None


def output_kind(path: Path, option: str) -> str:
    """FILE, STREAM or FD for an output path, or BadInput saying why it cannot be one."""
    fd = _own_fd(path)
    if fd is not None:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            raise BadInput(f"{option} {path}: descriptor {fd} is not open") from None
        if fd == 0 or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise BadInput(f"{option} {path}: descriptor {fd} is not open for writing")
        if stat.S_ISDIR(mode):
            raise BadInput(f"{option} {path}: a directory")
        return FD
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        _check_new_name(path, option)
        return FILE
    except OSError as exc:
        raise BadInput(f"{option} {path}: {_why(exc)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadInput(f"{option} {path}: a symbolic link (to {os.readlink(path)}): smcpatch "
                       "does not write through a link; name the file itself")
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{option} {path}: is a directory; give a file name")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return STREAM
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{option} {path}: not a regular file, character device or pipe")
    _check_name_length(path, option)
    return FILE


def _check_new_name(path: Path, option: str) -> None:
    """A name to create: its directory exists (smcpatch makes none for a file) and takes it."""
    parent = path.parent
    try:
        st = parent.stat()
    except FileNotFoundError:
        raise BadInput(f"{option} {path}: no directory {parent} (smcpatch creates no "
                       "directory for an output file: create it first)") from None
    except OSError as exc:
        raise BadInput(f"{option} {path}: {_why(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{option} {path}: {parent} is not a directory")
    _check_name_length(path, option)


def _check_name_length(path: Path, option: str) -> None:
    """The name and the whole path fit the filesystem (its temp name is made to fit too)."""
    try:
        name_max = os.pathconf(path.parent, "PC_NAME_MAX")
    except OSError:
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise BadInput(f"{option}: the file name is {len(os.fsencode(path.name))} bytes long, "
                       f"longer than this filesystem takes ({name_max})")
    if len(os.fsencode(str(path.absolute()))) >= 4096:
        raise BadInput(f"{option}: the path is longer than the system takes (4096 bytes)")


def check_output(path: Path, option: str) -> Path:
    """Refuse, before any work, an output path that cannot be written: a symlink, a directory,
    a block device or socket, a path under a file or in a directory that does not exist, a
    place nothing can be created in (/proc), a name too long for its filesystem."""
    path = path.expanduser()
    if output_kind(path, option) == FILE:
        _probe_dir(path.parent, option, path)
    return path


def check_distinct(outputs: list[tuple[str, Path]]) -> None:
    """No two outputs of one run on one file, however spelled: by the path resolved (./x, a
    link to it, /dev/stdout and /dev/fd/1) and, for what exists, by device and inode (a hard
    link). One output would silently replace the other."""
    seen: dict[object, tuple[str, Path]] = {}
    for option, path in outputs:
        keys: list[object] = [os.path.realpath(path)]
        fd = _own_fd(path)
        with contextlib.suppress(OSError):
            st = os.fstat(fd) if fd is not None else os.stat(path)
            keys.append((st.st_dev, st.st_ino))
        for key in keys:
            if key in seen:
                other, where = seen[key]
                raise BadInput(f"{other} {where} and {option} {path} are the same file: give "
                               "each output its own path")
        for key in keys:
            seen[key] = (option, path)


def check_own_dir(path: Path, option: str, marker: str) -> Path:
    """A directory smcpatch writes into and may clean: absent, empty, or one it made (it holds
    `marker`); anything else is the user's and refused before any work."""
    path = path.expanduser()
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BadInput(f"{option} {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise BadInput(f"{option} {path} exists, is not empty and was not made by smcpatch: "
                       "choose a new or empty directory")
    parent = path
    while not parent.exists():  # what will be created: the nearest directory that exists
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{option} {path}: {parent} is not a directory")
    _probe_dir(parent, option, path)
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


def write_output(path: Path, data: bytes | str, option: str = "") -> None:
    """A file the user asked for (--json, --vex, --junit): a regular file is replaced
    atomically, keeping its mode (a new one gets the mode the umask gives); a character device,
    a pipe or one of our descriptors is written through; a symlink or anything else is refused.
    A write that fails (no space left, an I/O error) is one line, exit 2, the old file intact."""
    payload = data.encode() if isinstance(data, str) else data
    path = path.expanduser()
    kind = output_kind(path, option)
    try:
        if kind == FD:
            fd = _own_fd(path)
            assert fd is not None
            for stream in (sys.stdout, sys.stderr):  # what was printed before comes first
                with contextlib.suppress(Exception):
                    stream.flush()
            _write_all(fd, payload)
        elif kind == STREAM:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                _write_all(fd, payload)
            finally:
                os.close(fd)
        else:
            _replace_file(path, payload)
    except OSError as exc:
        kept = " (the file there before is kept)" if kind == FILE and path.exists() else ""
        raise BadInput(f"{option} {path}: not written: {_why(exc)}{kept}".lstrip()) from None


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _replace_file(path: Path, payload: bytes) -> None:
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    tmp = path.with_name(temp_name(path.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, payload)
            os.fsync(fd)  # a full disk shows here at the latest, before the old file goes
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def withdraw_output(path: Path) -> bool:
    """Remove what an earlier run left under an output name this run has nothing to write to
    (a stale file is never left for CI to collect): a regular file only; True when removed."""
    with contextlib.suppress(OSError):
        if _own_fd(path) is None and stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
            return True
    return False


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
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{n / KB:.0f} KB"
