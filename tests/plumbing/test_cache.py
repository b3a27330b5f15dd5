"""The cache's promises: entries appear whole or not at all, locks never go stale."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.plumbing.cache import (
    Cache,
    atomic_dir,
    entry_is_current,
    hash_inputs,
    hash_tree,
    sweep_stale_temps,
)
from smcpatch.plumbing.files import TMP_PREFIX, temp_name


def _dead_pid() -> int:
    proc = multiprocessing.get_context("fork").Process(target=lambda: None)
    proc.start()
    proc.join()
    return proc.pid or 999999


def _hold_lock(root: str, seconds: float) -> None:
    with Cache(Path(root)).lock("x"):
        time.sleep(seconds)


def test_atomic_dir_success_writes_manifest(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with atomic_dir(final, key="k1") as tmp:
        (tmp / "data").write_text("x")
        assert not final.exists()
    assert (final / "data").read_text() == "x"
    assert entry_is_current(final, "k1")
    assert not entry_is_current(final, "k2")
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_dir_failure_leaves_nothing(tmp_path: Path, exc: BaseException) -> None:
    final = tmp_path / "entry"
    with pytest.raises(type(exc)), atomic_dir(final, key="k") as tmp:
        (tmp / "half").write_text("half")
        raise exc
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_failure_keeps_previous_entry(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with atomic_dir(final, key="old") as tmp:
        (tmp / "v").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final, key="new") as tmp:
        (tmp / "v").write_text("new")
        raise RuntimeError
    assert (final / "v").read_text() == "old"
    assert entry_is_current(final, "old")


def test_atomic_dir_replaces_stale_entry(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    for key in ("a", "b"):
        with atomic_dir(final, key=key) as tmp:
            (tmp / "v").write_text(key)
    assert (final / "v").read_text() == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_sweep_removes_only_dead_writers_temps(tmp_path: Path) -> None:
    dead = tmp_path / f"{TMP_PREFIX}entry.{_dead_pid()}.123456789012.0123abcd"
    reused = tmp_path / f"{TMP_PREFIX}entry.{os.getpid()}.1.0123abcd"  # our pid, another start
    live = tmp_path / temp_name("entry")
    # names that only look like temps are a user's: never touched
    theirs = [tmp_path / ".tmp-mydata.2024", tmp_path / f"{TMP_PREFIX}mydata",
              tmp_path / f"{TMP_PREFIX}x.{_dead_pid()}.notanumber.00"]
    for path in (dead, reused, live, *theirs):
        path.mkdir()
    sweep_stale_temps(tmp_path)
    assert not dead.exists() and not reused.exists()
    assert live.exists() and all(p.exists() for p in theirs)


def test_lock_serialises_processes_and_dies_with_holder(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path)
    ctx = multiprocessing.get_context("fork")
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), 1.0))
    holder.start()
    time.sleep(0.3)
    started = time.monotonic()
    with cache.lock("x"):
        waited = time.monotonic() - started
    holder.join()
    assert waited > 0.4  # we had to wait for the holder

    killed = ctx.Process(target=_hold_lock, args=(str(tmp_path), 60))
    killed.start()
    time.sleep(0.3)
    killed.kill()  # SIGKILL: the kernel drops the flock with the process
    killed.join()
    started = time.monotonic()
    with cache.lock("x"):
        pass
    assert time.monotonic() - started < 2


def test_unwritable_cache_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(BadInput, match="not writable"):
        Cache.open(blocker / "cache")


def test_hashes_are_stable_and_content_sensitive(tmp_path: Path) -> None:
    assert hash_inputs("a", 1) == hash_inputs("a", 1) != hash_inputs("a", 2)
    (tmp_path / "f").write_text("1")
    first = hash_tree(tmp_path)
    (tmp_path / "f").write_text("2")
    assert hash_tree(tmp_path) != first


def test_listing_fingerprint_ignores_directory_mtimes(tmp_path: Path) -> None:
    entry = tmp_path / "kdir"
    with atomic_dir(entry, "k", content="listing") as tmp:
        (tmp / "a" / "b").mkdir(parents=True)
        (tmp / "a" / "b" / "deep.h").write_text("x")
    os.utime(entry / "a" / "b", ns=(0, 0))  # e.g. a symlink replaced in place
    assert entry_is_current(entry, "k", "listing")
    (entry / "a" / "b" / "deep.h").unlink()
    assert not entry_is_current(entry, "k", "listing")


def test_content_fingerprint_catches_edits_deletions_and_truncation(tmp_path: Path) -> None:
    for mode in ("full", "stat", "names", "listing"):
        entry = tmp_path / mode
        with atomic_dir(entry, "k", content=mode) as tmp:
            (tmp / "a").mkdir()
            (tmp / "a" / "f.c").write_text("int x;\n")
            (tmp / "g.h").write_text("#define G 1\n")
        assert entry_is_current(entry, "k", mode)
        (entry / "a" / "f.c").unlink()
        assert not entry_is_current(entry, "k", mode), mode
        assert entry_is_current(entry, "k")  # the key alone still matches: content decides
    full = tmp_path / "full"
    (full / "a" / "f.c").write_text("int x;\n")  # the same bytes again: "full" is content only
    os.utime(full / "g.h", ns=(0, 0))
    assert entry_is_current(full, "k", "full")
    (full / "g.h").write_text("#define G 2\n")  # a same-size edit
    assert not entry_is_current(full, "k", "full")
    stat = tmp_path / "stat"
    (stat / "a" / "f.c").write_text("int y;\n")  # same size, new mtime
    assert not entry_is_current(stat, "k", "stat")
    names = tmp_path / "names"  # the big headers tree: names, dir mtimes, top files' sizes
    (names / "a" / "f.c").write_text("int x;\n")
    os.utime(names / "a", ns=(0, 0))
    assert not entry_is_current(names, "k", "names")
    with atomic_dir(names, "k", content="names") as tmp:
        (tmp / "Module.symvers").write_text("0x1 sym vmlinux EXPORT_SYMBOL\n")
    (names / "Module.symvers").write_text("")  # truncated
    assert not entry_is_current(names, "k", "names")


def test_entry_without_fingerprint_is_trusted_once_and_then_checked(tmp_path: Path) -> None:
    entry = tmp_path / "old"
    with atomic_dir(entry, "k") as tmp:  # made by a version without content checks
        (tmp / "f").write_text("1")
    assert entry_is_current(entry, "k", "full")  # records the fingerprint
    (entry / "f").write_text("2")
    assert not entry_is_current(entry, "k", "full")


def test_a_killed_runs_temps_are_removed_when_the_cache_is_next_opened(tmp_path: Path) -> None:
    """What a SIGKILLed run left (an 83 MB kdir temp, say) goes at the next run, whatever it
    runs; a live run's temps and names that are not ours stay."""
    dead = f"{TMP_PREFIX}6.1.176-1_amd64.{_dead_pid()}.1.0123abcd"
    for where in ("kdir", "builds/6.1.176-1_amd64__x"):
        (tmp_path / where / dead / "root").mkdir(parents=True)
    live = tmp_path / "kdir" / temp_name("other")
    live.mkdir()
    theirs = tmp_path / "kdir" / ".tmp-mine.2024"
    theirs.mkdir()
    Cache.open(tmp_path)
    assert not (tmp_path / "kdir" / dead).exists()
    assert not (tmp_path / "builds/6.1.176-1_amd64__x" / dead).exists()
    assert live.exists() and theirs.exists()
