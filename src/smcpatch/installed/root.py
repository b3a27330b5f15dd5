"""A machine's root directory: its paths read as that machine sees them, never the host's.

ROOT may be ``/`` or a mounted image. A path of the machine (``/etc/modprobe.d/x.conf``) is walked
under ROOT one component at a time, each opened relative to the directory before it (``openat``
with ``O_NOFOLLOW``), so a link is never followed by the host's kernel: an absolute link target
starts again at ROOT, ``..`` stops at ROOT, and more than 40 links (a loop) is a refusal in one
line, never a path on the host. A file is opened without following its last component and
without blocking (a FIFO), and its type and size are checked on the opened descriptor before
anything is read: a FIFO, device or directory is not read as a file, and a file larger than what
it can be is refused before its first byte.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from ..errors import BadInput
from ..plumbing.files import MB, temp_name

MAX_LINKS = 40  # as the kernel's path walk: more is a loop
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO opens, unread
Kind = Literal["file", "dir", "other"]


@dataclass
class _End:
    """Where a walk stopped: the directories it holds open (ROOT first), and the last
    component in the last of them (None: the end is that directory itself)."""

    stack: list[tuple[Path, int]]
    name: str | None = None
    mode: int | None = None  # the last component's type (not followed); None: not there
    missing: list[str] = field(default_factory=list)  # the part of the path that is not there

    @property
    def path(self) -> Path:
        """The host path it names (for showing and comparing; never opened by this path)."""
        top = self.stack[-1][0]
        return top.joinpath(*([self.name] if self.name else []), *self.missing)

    @property
    def kind(self) -> Kind | None:
        if self.missing:
            return None
        if self.name is None:
            return "dir"
        assert self.mode is not None
        return "file" if stat.S_ISREG(self.mode) else "other"

    @property
    def fd(self) -> int:
        return self.stack[-1][1]


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

    def show(self, machine_path: str) -> str:
        """How a path is named to a person: as the machine names it, with ROOT in front when
        ROOT is not `/` (`/mnt/img/etc/modprobe.d/x.conf`)."""
        return machine_path if self.is_host else f"{self.path}{machine_path}"

    # -- the walk ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _walk(self, machine_path: str, create: bool = False) -> Iterator[_End]:
        """The machine path walked inside ROOT, links followed as the machine would follow them;
        `create`: missing directories are made (mode 0755) on the way."""
        try:
            first = os.open(self.path, _DIR)
        except OSError as exc:
            raise BadInput(f"{self.path}: {exc.strerror or exc}") from None
        end = _End([(self.path, first)])
        try:
            self._follow(end, machine_path, create)
            yield end
        finally:
            for _, fd in end.stack:
                os.close(fd)

    def _follow(self, end: _End, machine_path: str, create: bool) -> None:
        parts = deque(PurePosixPath("/", machine_path).parts[1:])
        links = 0
        while parts:
            part = parts.popleft()
            if part == "..":
                if end.name is not None:  # below a file: nothing there, whatever follows
                    end.missing.append(part)
                elif end.missing:
                    end.missing.pop()
                elif len(end.stack) > 1:  # clamped at ROOT
                    os.close(end.stack.pop()[1])
                continue
            if end.missing or end.name is not None:  # below something missing or a file
                end.missing.append(part)
                continue
            top_path, top = end.stack[-1]
            try:
                st = os.stat(part, dir_fd=top, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    end.missing.append(part)
                    continue
                os.mkdir(part, 0o755, dir_fd=top)
                st = os.stat(part, dir_fd=top, follow_symlinks=False)
            except OSError:  # unreadable: nothing the machine could read either
                end.missing.append(part)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise BadInput(f"{self.show(machine_path)}: a symlink loop under the root "
                                   f"(more than {MAX_LINKS} links): refused")
                try:
                    target = PurePosixPath(os.readlink(part, dir_fd=top))
                except OSError:  # replaced while we looked: nothing there
                    end.missing.append(part)
                    continue
                if target.is_absolute():  # the machine's /, which is ROOT
                    while len(end.stack) > 1:
                        os.close(end.stack.pop()[1])
                parts.extendleft(reversed(target.parts[1:] if target.is_absolute()
                                          else target.parts))
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    end.stack.append((top_path / part, os.open(part, _DIR, dir_fd=top)))
                except OSError:  # replaced by a link or a file while we looked: not entered
                    end.missing.append(part)
                continue
            end.name, end.mode = part, st.st_mode

    # -- what is there --------------------------------------------------------------------------
    def resolve(self, machine_path: str) -> Path:
        """The host path of a path of the machine, its links followed inside ROOT (for showing
        and comparing: read through `read` and `listdir`, never through this path)."""
        with self._walk(machine_path) as end:
            return end.path

    def kind(self, machine_path: str) -> Kind | None:
        """What the path is, links followed inside ROOT: a regular file, a directory, something
        else (a device, FIFO, socket), or None when it is not there."""
        with self._walk(machine_path) as end:
            return end.kind

    def listdir(self, machine_path: str) -> list[str]:
        """The names in a directory of the machine, sorted; none when it is not a directory or
        cannot be read."""
        with self._walk(machine_path) as end:
            if end.kind != "dir":
                return []
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=end.fd)
            except OSError:
                return []
            try:
                return sorted(os.listdir(fd))
            finally:
                os.close(fd)

    def files_under(self, machine_path: str) -> list[str]:
        """Every entry below a directory that is not a directory (files, links, devices), as
        paths relative to it, sorted; links to directories are not entered (as `find`)."""
        found: list[str] = []
        with self._walk(machine_path) as end:
            if end.kind == "dir":
                for dirpath, dirs, names, fd in os.fwalk(".", dir_fd=end.fd):
                    # fwalk sorts links by what they name on the host: every link is ours
                    links = [d for d in dirs if _is_link(d, fd)]
                    found += [os.path.normpath(os.path.join(dirpath, n)) for n in names + links]
        return sorted(found)

    def read(self, machine_path: str, limit: int, what: str) -> bytes | None:
        """A regular file of the machine, whole; None when it is not there or is not a regular
        file (a FIFO, device, socket or directory: never read). One larger than `limit` is
        refused before anything is read."""
        with self._walk(machine_path) as end:
            if end.kind != "file":
                return None
            assert end.name is not None
            return read_at(end.fd, end.name, limit, what, self.show(machine_path))

    @contextlib.contextmanager
    def directory(self, machine_path: str, create: bool = False) -> Iterator[int]:
        """A descriptor of a directory of the machine (for *at calls), made on the way when
        `create`; a path that is not a directory is refused."""
        try:
            with self._walk(machine_path, create) as end:
                if end.kind != "dir":
                    gone = end.kind is None and end.name is None
                    raise BadInput(f"{self.show(machine_path)}: "
                                   f"{'not there' if gone else 'not a directory'}")
                yield end.fd
        except OSError as exc:
            raise BadInput(f"{self.show(machine_path)}: {exc.strerror or exc}") from None

    def probe_write(self, machine_dir: str, option: str) -> None:
        """Refuse, before any work, a directory nothing can be created in (a read-only image,
        not root): a temp file of ours made and removed in it, or in the deepest part of it
        that exists (the rest would be made)."""
        shown = self.show(machine_dir)
        with self._walk(machine_dir) as end:
            if end.name is not None or (end.missing and end.missing[0] == ".."):
                raise BadInput(f"{option}: {shown}: a part of the path is not a directory")
            probe = temp_name("probe")
            try:
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600, dir_fd=end.fd))
                os.unlink(probe, dir_fd=end.fd)
            except OSError as exc:
                raise BadInput(f"{option}: cannot create files in {end.stack[-1][0]}: "
                               f"{exc.strerror or exc}") from None


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_at(dir_fd: int, name: str, limit: int, what: str, shown: str) -> bytes | None:
    """`name` in a directory, not followed if a link, read whole when it is a regular file
    (its type and size checked on the opened descriptor); None otherwise."""
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:  # gone, a link (ELOOP), unreadable
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > limit:
            raise BadInput(f"{shown}: {_size(st.st_size)}, larger than {what} can be "
                           f"({_size(limit)} at most): refused")
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, 4 * MB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # it grew while we read it
            raise BadInput(f"{shown}: larger than {what} can be ({_size(limit)} at most): "
                           "refused")
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _size(n: int) -> str:
    if n >= 1024 * MB:
        return f"{n / (1024 * MB):.1f} GB"
    return f"{n / MB:.1f} MB" if n >= MB else f"{n} bytes"
