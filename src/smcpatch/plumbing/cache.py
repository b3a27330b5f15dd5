"""The on-disk cache: where it lives, atomic entries (temp dir + rename) and locks.

Every cache entry is a directory that either exists complete or not at all: it is built in a
temporary sibling and renamed into place. Locks are fcntl.flock locks, which the kernel drops when
the holding process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput, ExtractError
from .files import TMP_PREFIX, temp_name, temp_owner_alive, write_atomic

MANIFEST = ".complete.json"


def default_cache_root() -> Path:
    """$SMCPATCH_CACHE, else $XDG_CACHE_HOME/smcpatch, else ~/.cache/smcpatch."""
    env = os.environ.get("SMCPATCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "smcpatch"


@dataclass(frozen=True)
class Cache:
    root: Path

    @classmethod
    def open(cls, root: Path | None = None) -> Cache:
        path = (root or default_cache_root()).expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise BadInput(f"cache directory {path} is not writable: {exc.strerror}") from exc
        cache = cls(path)
        cache.sweep()
        return cache

    def sweep(self) -> None:
        """What killed runs left in the cache, two levels down (<kind>/ and <kind>/<entry>/,
        where entries and their parts are published): removed once their process is gone."""
        sweep_stale_temps(self.root)
        for kind in _subdirs(self.root):
            sweep_stale_temps(kind)
            for entry in _subdirs(kind):
                sweep_stale_temps(entry)

    def dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, name: str, wait_message: str | None = None,
             shared: bool = False) -> Iterator[None]:
        """Lock on `name` across every process using this cache: exclusive, or shared (many
        holders; an exclusive taker waits for all of them)."""
        lock_path = self.dir("locks", safe_name(name) + ".lock")
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        with open(lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait_message:
                    print(wait_message, flush=True)
                fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def safe_name(text: str) -> str:
    """A file-name-safe rendering of a key (package versions contain ~ and +, which are fine)."""
    return "".join(c if c.isalnum() or c in "-_.+~" else "_" for c in text)


def hash_inputs(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable inputs, used as cache key component."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(root: Path) -> str:
    """Content hash of every regular file below root (names and bytes), for change detection."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_manifest(entry: Path) -> dict[str, Any] | None:
    """The manifest of a complete entry, or None when the entry is absent or incomplete."""
    try:
        data = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def entry_is_current(entry: Path, key: str, content: str | None = None) -> bool:
    """The entry is complete with this key (and, given a content mode, its files are unchanged)."""
    manifest = read_manifest(entry)
    if manifest is None or manifest.get("key") != key:
        return False
    return content is None or content_ok(entry, manifest, content)


def tree_fingerprint(root: Path, mode: str) -> str:
    """What an entry's files look like, to notice a deleted, added, truncated or rewritten file.

    "full": every name and every file's bytes (for the few small files that matter); "stat":
    every name, each file's size, mtime and ctime (a file edited in place with its size and
    mtime put back still has a new ctime, which no user can set; cheap where hashing 24 MB of
    modules per target would not be); "names": every name and type, each directory's
    mtime (which changes when an entry below it is added, deleted or renamed) and the size and
    mtime of the files near the top only (a headers tree's Makefile, .config, Module.symvers);
    "listing": the same without directory mtimes, for the big headers tree, where a stat per
    file would slow every warm run and directory mtimes proved unstable (tar's delayed symlinks
    can touch a directory after the fingerprint was taken).
    """
    digest = hashlib.sha256(mode.encode())
    stack = [(str(root), "")]
    while stack:
        path, rel = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = rel + entry.name
            if name.startswith(MANIFEST):  # the manifest, or an update of it
                continue
            if entry.is_symlink():
                facts = f"L{os.readlink(entry.path)}"
            elif entry.is_dir():
                facts = f"D{entry.stat().st_mtime_ns}" if mode == "names" else "D"
                stack.append((entry.path, name + "/"))
            elif mode == "full":
                facts = f"F{hash_file(Path(entry.path))}"
            elif mode == "stat":  # ctime too: an in-place edit cannot put it back
                st = entry.stat()
                facts = f"F{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
            elif name.count("/") <= 4:  # "names", "listing": top files only
                st = entry.stat()
                facts = f"F{st.st_size}:{st.st_mtime_ns}"
            else:
                facts = "F"
            digest.update(f"{name}\0{facts}\0".encode())
    return digest.hexdigest()[:32]


def content_ok(entry: Path, manifest: dict[str, Any], mode: str) -> bool:
    """Compare the entry's files with the fingerprint recorded at creation. An entry made before
    fingerprints existed is trusted once and gets one (its key already matched)."""
    recorded = manifest.get("content")
    if isinstance(recorded, dict) and recorded.get("mode") == mode:
        return recorded.get("digest") == tree_fingerprint(entry, mode)
    manifest["content"] = {"mode": mode, "digest": tree_fingerprint(entry, mode)}
    with contextlib.suppress(OSError):  # best effort: a read-only cache still works
        write_atomic(entry / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return True


@contextlib.contextmanager
def publish_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir beside `final`; on success it replaces `final` whole (a rename),
    on any exception (including KeyboardInterrupt) it is removed and `final` is untouched.

    The one way smcpatch publishes a directory: cache entries (atomic_dir), variants, DKMS
    packages, guest kernels.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(final.parent, final.name)
    tmp = final.parent / temp_name(final.name)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise ExtractError(f"no space left on device while writing {final.parent}") from exc
        raise


@contextlib.contextmanager
def atomic_dir(final: Path, key: str, extra: dict[str, Any] | None = None,
               content: str | None = None) -> Iterator[Path]:
    """A cache entry published with publish_dir, with a manifest carrying `key` (and, given a
    content mode, the fingerprint of the files, checked on use: entry_is_current)."""
    with publish_dir(final) as tmp:
        yield tmp
        manifest = {"key": key, "created": time.time(), **(extra or {})}
        if content is not None:
            manifest["content"] = {"mode": content, "digest": tree_fingerprint(tmp, content)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def replace_dir(tmp: Path, final: Path) -> None:
    """Put tmp at final's place; an existing final is moved aside first, then removed."""
    if final.exists():
        old = final.parent / temp_name(f"{final.name}.old")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def sweep_stale_temps(parent: Path, name: str | None = None) -> None:
    """Remove what a dead run left under our own temp names in `parent` (a killed build, an
    interrupted extraction); never a live run's, never a name that is not ours. With `name`,
    only that file's own temps (beside a user's output, nothing else of the directory)."""
    prefix = TMP_PREFIX + (f"{name}." if name else "")
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        if temp_owner_alive(name) is False:
            path = parent / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


def _subdirs(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path)
                if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except OSError:
        return []
