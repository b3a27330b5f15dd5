"""Faults done for real: interruptions, two runs at once, a corrupt cache, hostile archives, a full
disk, broken patches and missing tools. Each test fails if the behaviour it covers regresses.

The README's table "fault → what the user sees → what is kept" names these tests. Tests on real
kernels are integration tests: they seed a private temporary cache from the shared test cache
(hard links of the .debs and a copy of the apt lists), so nothing is downloaded but what a test
needs to be downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elfobjs import require_tool

from smcpatch.errors import ExtractError, ToolMissing
from smcpatch.features import vm
from smcpatch.plumbing.cache import TMP_PREFIX, Cache, atomic_dir, entry_is_current, hash_file
from smcpatch.stages import build, sources
from smcpatch.stages.targets import Target, load_matrix

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "6.1.176"


# --------------------------------------------------------------------------- helpers


def _test_cache_root() -> Path:
    env = os.environ.get("SMCPATCH_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "smcpatch-tests"


def target_of(version: str = KERNEL) -> Target:
    return next(t for t in load_matrix() if t.version == version)


def cli_env(path: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", **extra}
    env.pop("SMCPATCH_DEBUG", None)
    env.pop("SMCPATCH_CACHE", None)
    if path is not None:
        env["PATH"] = path
    return env


def inv(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
        timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *texts: str) -> str:
    """Non-zero exit, exactly one stderr line starting 'error:', no traceback anywhere."""
    assert proc.returncode != 0, (proc.stdout[-2000:], proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:"), lines
    for text in texts:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def leftovers(cache_root: Path) -> list[Path]:
    """Temp dirs of writers (live or dead) anywhere in the cache."""
    return sorted(p for p in cache_root.rglob(f"{TMP_PREFIX}*"))


def locks_are_free(cache_root: Path) -> bool:
    for lock in (cache_root / "locks").glob("*.lock"):
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def fake_path(tmp_path: Path, without: Callable[[str], bool]) -> str:
    """A PATH holding every tool of ours but those `without` selects (by name)."""
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for tool in Path(directory).iterdir():
            link = fake / tool.name
            if without(tool.name) or link.exists() or link.is_symlink():
                continue
            if os.access(tool, os.X_OK) and not tool.is_dir():
                link.symlink_to(tool)
    return str(fake)


def warm_test_cache(version: str = KERNEL) -> Cache:
    """The shared test cache with `version` fetched (downloads only on the very first run)."""
    from conftest import real_workspace

    real_workspace(version)
    return Cache.open(_test_cache_root())


def seeded_cache(root: Path, version: str = KERNEL, copy: bool = False,
                 skip: Callable[[str], bool] = lambda name: False) -> Path:
    """A fresh cache holding the kernel's .debs (hard links, or copies to alter) and apt lists."""
    shared = warm_test_cache(version).root
    target = target_of(version)
    names = (target.source_package, target.headers_package, target.common_headers_package,
             target.kbuild, target.image_package)
    (root / "debs").mkdir(parents=True)
    for deb in (shared / "debs").glob("*.deb"):
        if deb.name.split("_")[0] in names and deb.name.split("_")[1] == target.package_version:
            if skip(deb.name):
                continue
            if copy:
                shutil.copy2(deb, root / "debs" / deb.name)
            else:
                os.link(deb, root / "debs" / deb.name)
    shutil.copytree(shared / "apt", root / "apt", symlinks=True,
                    ignore=shutil.ignore_patterns("*.lock", "partial"))
    return root


# --------------------------------------------------------------------------- interruption


class Run:
    """`inv verify --kernel K --cache C` in its own process group, killed on a condition."""

    def __init__(self, cache: Path, *extra: str) -> None:
        self.cache = cache
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "verify", "--kernel", KERNEL, "--cache", str(cache),
             *extra], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)

    def kill_when(self, condition: Callable[[], bool], sig: int, settle: float = 0.0,
                  timeout: float = 600) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"the run ended before the kill point: {self.proc.returncode}\n"
                            f"{out[-3000:]}\n{err}")
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                pytest.fail("kill point never reached")
            time.sleep(0.02)
        time.sleep(settle)
        # SIGINT as a terminal sends it (the whole foreground group); SIGKILL too (make, tar...)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        out, err = self.proc.communicate(timeout=120)
        if sig == signal.SIGKILL:  # children that outlived the group kill must be gone too
            time.sleep(0.2)
        return self.proc.returncode, out, err


def _any(cache: Path, pattern: str) -> Callable[[], bool]:
    return lambda: any(cache.glob(pattern))


def _big_download(cache: Path) -> Callable[[], bool]:
    def check() -> bool:
        return any(p.stat().st_size > 4_000_000
                   for p in cache.glob(f"debs/{TMP_PREFIX}download*/*") if p.is_file())
    return check


def _building_with_objects(cache: Path) -> Callable[[], bool]:
    """make is compiling in this run (not the marker a killed run left: that one is older)."""
    started = time.time()

    def check() -> bool:
        for work in cache.glob("builds/*/work"):
            with contextlib.suppress(FileNotFoundError):
                if ((work / ".building").stat().st_mtime > started
                        and any(work.glob("*.o"))):
                    return True
        return False
    return check


def _verdicts(report_path: Path) -> dict[str, object]:
    t = json.loads(report_path.read_text())["targets"][0]
    return {"ok": t["ok"], "source_state": t["source_state"], "patch": t["patch"],
            "before": t["before"]["verdict"], "after": t["after"]["verdict"],
            "shipped": t["shipped"]["verdict"], "changed": t["changed_functions"],
            "vermagic": t["vermagic_ok"], "modversions": t["modversions_ok"]}


@pytest.mark.integration
def test_interrupted_at_every_stage_then_resumes_to_the_same_result(tmp_path: Path) -> None:
    """SIGKILL/SIGINT during download, extraction, build and inspection; the next run recovers
    by itself (no stale lock, no half-written entry used) and reaches the same verdicts."""
    shared = warm_test_cache().root
    reference = tmp_path / "reference.json"
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(shared), "--json", str(reference))
    assert proc.returncode == 0, proc.stderr

    # everything but the 70 MB linux-image deb: the first run really downloads it
    cache = seeded_cache(tmp_path / "cache", skip=lambda name: name.startswith("linux-image"))
    image = target_of().image_package

    code, _, _ = Run(cache).kill_when(_big_download(cache), signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not list((cache / "debs").glob(f"{image}_*")), "a partial download was promoted"

    code, out, err = Run(cache).kill_when(_any(cache, f"kdir/{TMP_PREFIX}*"), signal.SIGINT,
                                          settle=1.0)
    assert code == 130, (out[-2000:], err)
    assert "interrupted" in err and "Traceback" not in out + err
    assert not [p for p in leftovers(cache) if "kdir" in str(p) or "sources" in str(p)]
    assert locks_are_free(cache)

    code, _, _ = Run(cache).kill_when(_any(cache, f"sources/{TMP_PREFIX}*"), signal.SIGKILL,
                                      settle=2.0)
    assert code == -signal.SIGKILL

    code, _, _ = Run(cache).kill_when(_building_with_objects(cache), signal.SIGKILL, settle=1.0)
    assert code == -signal.SIGKILL
    assert locks_are_free(cache)  # flock locks die with their holder

    code, out, err = Run(cache).kill_when(_building_with_objects(cache), signal.SIGINT,
                                          settle=1.0)
    assert code == 130, (out[-2000:], err)
    assert not list(cache.glob(f"builds/*/{TMP_PREFIX}*")), "a half-built output was kept"

    # the build is complete: the kill lands in inspection or in the report (both are short)
    code, _, _ = Run(cache).kill_when(_any(cache, "builds/*/out/.complete.json"), signal.SIGKILL)
    assert code in (-signal.SIGKILL, 0)

    result = tmp_path / "result.json"
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(cache), "--json", str(result),
               env=cli_env())
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr)
    assert _verdicts(result) == _verdicts(reference)
    assert leftovers(cache) == []
    assert locks_are_free(cache)
    assert hash_file(next((cache / "debs").glob(f"{image}_*"))) == hash_file(
        next((shared / "debs").glob(f"{image}_{target_of().package_version}_*")))

    # and the run after that is warm: nothing the build did invalidated the cache's entries
    again = tmp_path / "again.json"
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(cache), "--json", str(again))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(again.read_text())["targets"][0]["from_cache"] == {
        "fetch": True, "build": True, "inspect": True}


@pytest.mark.integration
def test_two_runs_on_one_cache_at_once(tmp_path: Path) -> None:
    cache = seeded_cache(tmp_path / "cache")
    runs = [subprocess.Popen(
        [sys.executable, "-m", "invoke", "verify", "--kernel", KERNEL, "--cache", str(cache),
         "--json", str(tmp_path / f"r{i}.json")], cwd=ROOT, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, (out[-3000:], err)
        assert "Traceback" not in out + err
    assert "waiting for another run" in outputs[0][0] + outputs[1][0]
    assert _verdicts(tmp_path / "r1.json") == _verdicts(tmp_path / "r2.json")
    assert _verdicts(tmp_path / "r1.json")["ok"] is True
    assert leftovers(cache) == []
    # exactly one of them extracted and built; the other reused it
    built = [json.loads((tmp_path / f"r{i}.json").read_text())["targets"][0]["from_cache"]
             for i in (1, 2)]
    assert sorted(b["build"] for b in built) == [False, True]


# --------------------------------------------------------------------------- corrupt cache


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


@pytest.mark.integration
def test_altered_extracted_files_are_extracted_again(tmp_path: Path) -> None:
    """An edited source file, a deleted header and a truncated shipped module are noticed by
    their content fingerprints and extracted again from the .debs (no download)."""
    shared = warm_test_cache().root
    cache_root = seeded_cache(tmp_path / "cache")
    target = target_of()
    for part in ("sources", "kdir", "shipped"):  # copies: the shared entries stay intact
        for entry in (shared / part).glob(f"*{target.package_version}*"):
            dest = cache_root / part / entry.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if part == "kdir":  # hard links: unlinking one in the copy leaves the shared one
                subprocess.run(["cp", "-al", str(entry), str(dest)], check=True)
            else:
                shutil.copytree(entry, dest, symlinks=True)
    cache = Cache.open(cache_root)
    ws = sources.fetch(cache, target)
    assert ws.from_cache

    clc = ws.source_tree / "net" / "smc" / "smc_clc.c"
    original = clc.read_bytes()
    clc.write_bytes(original.replace(b"rcu_read_lock", b"rcu_read_LOCK", 1))
    header = ws.kdir / "Makefile"
    common = next(ws.kdir.parent.glob("linux-headers-*-common"))
    victim = common / "include" / "linux" / "skbuff.h"
    victim.unlink()
    assert ws.shipped_module is not None
    shipped = ws.shipped_module.read_bytes()
    ws.shipped_module.write_bytes(shipped[: len(shipped) // 2])

    again = sources.fetch(cache, target)
    assert not again.from_cache
    assert clc.read_bytes() == original
    assert victim.is_file() and header.is_file()
    assert again.shipped_module is not None and again.shipped_module.read_bytes() == shipped
    assert leftovers(cache_root) == []
    assert sources.fetch(cache, target).from_cache


@pytest.mark.integration
def test_truncated_or_altered_deb_is_fetched_again(tmp_path: Path) -> None:
    """apt.py compares a cached .deb's size and SHA256 with the archive's record before use."""
    from smcpatch.plumbing.apt import Apt

    target = target_of()
    cache_root = seeded_cache(tmp_path / "cache", copy=True)
    kbuild = next((cache_root / "debs").glob(f"{target.kbuild}_*"))
    headers = next((cache_root / "debs").glob(f"{target.headers_package}_*"))
    with open(kbuild, "r+b") as handle:
        handle.truncate(kbuild.stat().st_size // 3)
    data = bytearray(headers.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    headers.write_bytes(bytes(data))

    cache = Cache.open(cache_root)
    ws = sources.fetch(cache, target)
    assert (ws.kdir / "Module.symvers").is_file()
    apt = Apt(cache)
    for name, path in ((target.kbuild, kbuild), (target.headers_package, headers)):
        record = apt.show(name, target.package_version)
        assert record is not None
        assert path.stat().st_size == record.size and hash_file(path) == record.sha256


# --------------------------------------------------------------------------- hostile archives


def _tar(members: list[tuple[str, str, bytes | str]], fmt: str = "w") -> bytes:
    """A tar archive of (kind, name, data-or-link-target) members, kind in file/symlink/hardlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=fmt) as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(payload)
                tar.addfile(info)
    return out.getvalue()


def _deb(path: Path, data_tar: bytes) -> Path:
    """A .deb built by hand (ar of debian-binary, control.tar, data.tar): dpkg-deb --build
    refuses to make members like these, which is the point."""
    work = path.parent / f"{path.name}.parts"
    work.mkdir()
    (work / "debian-binary").write_text("2.0\n")
    (work / "control.tar").write_bytes(_tar([("file", "./control",
                                              "Package: evil\nVersion: 1\nArchitecture: all\n"
                                              "Maintainer: x <x@example.org>\nDescription: x\n")]))
    (work / "data.tar").write_bytes(data_tar)
    subprocess.run(["ar", "rc", str(path), "debian-binary", "control.tar", "data.tar"],
                   cwd=work, check=True, capture_output=True)
    return path


HOSTILE = ["absolute", "dotdot", "symlink-absolute", "symlink-relative", "hardlink"]


def _hostile_members(kind: str, prefix: str, outside: Path) -> list[tuple[str, str, bytes | str]]:
    escape = "../" * (prefix.count("/") + 6)
    return {
        # an absolute name the extractor selects (tar would write it below the cache, but an
        # archive that tries is hostile); absolute names it doesn't select are never written
        "absolute": [("file", "/" + prefix.removeprefix("./") + "abs", "pwned"),
                     ("file", f"{outside}/pwned", "pwned")],
        "dotdot": [("file", f"{prefix}{escape}{str(outside).lstrip('/')}/pwned", "pwned")],
        "symlink-absolute": [("symlink", f"{prefix}evil", str(outside)),
                             ("file", f"{prefix}evil/pwned", "pwned")],
        "symlink-relative": [("symlink", f"{prefix}evil", f"{escape}{str(outside).lstrip('/')}"),
                             ("file", f"{prefix}evil/pwned", "pwned")],
        "hardlink": [("hardlink", f"{prefix}hl", str(outside / "victim"))],
    }[kind]


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory outside the cache that a hostile archive aims at; must stay as it is."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim").write_text("untouched")
    yield out
    assert sorted(p.name for p in out.iterdir()) == ["victim"], "written outside the cache"
    assert (out / "victim").read_text() == "untouched"


def _assert_refused(exc: pytest.ExceptionInfo[ExtractError], cache: Path, part: str) -> None:
    message = exc.value.one_line()
    assert "refusing" in message or "outside the extraction directory" in message, message
    assert not [p for p in (cache / part).iterdir()], "a hostile entry or temp dir was kept"


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_headers_deb_is_refused(tmp_path: Path, outside: Path, kind: str) -> None:
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    benign = _deb(tmp_path / "benign.deb", _tar([("file", "./usr/src/README", "hi")]))
    members = [("file", "./usr/src/ok.h", "ok"), *_hostile_members(kind, "./usr/", outside)]
    hostile = _deb(tmp_path / "hostile.deb", _tar(members))
    debs = {target.headers_package: benign, target.common_headers_package: hostile,
            target.kbuild: benign}
    entry = cache.dir("kdir", target.key)
    with pytest.raises(ExtractError) as exc:
        sources._extract_kdir(target, debs, entry, "k")
    _assert_refused(exc, cache.root, "kdir")


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_image_deb_is_refused(tmp_path: Path, outside: Path, kind: str) -> None:
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    prefix = f"./lib/modules/{target.release}/kernel/net/smc/"
    members = [("file", f"{prefix}smc.ko", b"\x7fELF"),
               *_hostile_members(kind, prefix + "smc.ko.", outside)]
    debs = {target.image_package: _deb(tmp_path / "image.deb", _tar(members))}
    with pytest.raises(ExtractError) as exc:
        sources._extract_shipped(target, debs, cache.dir("shipped", target.key), "k")
    _assert_refused(exc, cache.root, "shipped")


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_source_tarball_is_refused(tmp_path: Path, outside: Path, kind: str) -> None:
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    top = f"linux-source-{target.series}/"
    inner = _tar([("file", f"{top}net/smc/smc_clc.c", "int x;\n"),
                  ("file", f"{top}include/net/dst.h", "/* dst */\n"),
                  *_hostile_members(kind, f"{top}net/smc/", outside)], fmt="w:xz")
    data = _tar([("file", f"./usr/src/linux-source-{target.series}.tar.xz", inner)])
    debs = {target.source_package: _deb(tmp_path / "source.deb", data)}
    entry = cache.dir("sources", f"{target.source_package}_{target.package_version}")
    if kind == "absolute":  # tar's member selection (anchored, relative) never picks them
        sources._extract_source(target, debs, entry, "k")
        assert not list(entry.rglob("abs")) and not list(entry.rglob("pwned"))
        return
    with pytest.raises(ExtractError) as exc:
        sources._extract_source(target, debs, entry, "k")
    _assert_refused(exc, cache.root, "sources")


def test_benign_handmade_source_deb_still_extracts(tmp_path: Path) -> None:
    """The same hand-made packages without the hostile member extract fine (no false alarm)."""
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    top = f"linux-source-{target.series}/"
    inner = _tar([("file", f"{top}net/smc/smc_clc.c", "int x;\n"),
                  ("symlink", f"{top}net/smc/link.c", "smc_clc.c"),
                  ("file", f"{top}include/net/dst.h", "/* dst */\n")], fmt="w:xz")
    data = _tar([("file", f"./usr/src/linux-source-{target.series}.tar.xz", inner)])
    debs = {target.source_package: _deb(tmp_path / "source.deb", data)}
    entry = cache.dir("sources", f"{target.source_package}_{target.package_version}")
    sources._extract_source(target, debs, entry, "k")
    assert (entry / "tree" / "net" / "smc" / "smc_clc.c").read_text() == "int x;\n"
    assert entry_is_current(entry, "k", sources.CONTENT_CHECK["source"])


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    command = [require_tool("mount", "mount"), "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _df_used(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.mark.integration
def test_disk_full_during_extraction(tmp_path: Path, small_tmpfs: Path) -> None:
    """The cache on a 20 MB tmpfs (the .debs and apt lists elsewhere): the 90 MB headers tree
    does not fit. One line naming the directory; nothing half-written stays on the disk."""
    outside = seeded_cache(tmp_path / "elsewhere")
    for part in ("debs", "apt"):
        (small_tmpfs / part).symlink_to(outside / part)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(small_tmpfs))
    line = assert_one_line_error(proc, "no space left on device", str(small_tmpfs))
    assert any(f"{small_tmpfs}/{part}" in line for part in ("kdir", "sources", "shipped")), line
    assert leftovers(small_tmpfs) == []
    assert not any((small_tmpfs / "kdir").glob("*/.complete.json"))
    assert _df_used(small_tmpfs) < 8_000_000  # the partial headers tree was removed


@pytest.mark.integration
def test_disk_full_during_build(tmp_path: Path, small_tmpfs: Path) -> None:
    """Fetched entries elsewhere, builds on a 20 MB tmpfs: the objects (with DWARF) don't fit."""
    shared = warm_test_cache().root
    for part in ("debs", "apt", "sources", "kdir", "shipped"):
        (small_tmpfs / part).symlink_to(shared / part)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(small_tmpfs))
    line = assert_one_line_error(proc, "no space left on device", f"{small_tmpfs}/builds")
    assert "make" in line or "build" in line, line
    assert leftovers(small_tmpfs) == []
    assert not any(small_tmpfs.glob("builds/*/out"))
    assert not any(small_tmpfs.glob("builds/*/work"))  # the partial objects were removed
    assert _df_used(small_tmpfs) < 8_000_000


# --------------------------------------------------------------------------- bad patches


def _patches_copy(tmp_path: Path) -> Path:
    """A copy of our patch series, for `--patches DIR`."""
    return Path(shutil.copytree(ROOT / "patches", tmp_path / "patches"))


def _break_series_syntax(patches: Path) -> str:
    series = patches / "series"
    series.write_text(series.read_text() + "\nthis is not a series line\n")
    return "unknown keyword"


def _break_series_missing_file(patches: Path) -> str:
    series = patches / "series"
    text = series.read_text()
    assert "0001-smc-clc-prfx-match-rcu.patch" in text
    (patches / "0001-smc-clc-prfx-match-rcu.patch").unlink()
    return "patch file not found"


def _break_patch_body(patches: Path) -> str:
    (patches / "0001-smc-clc-prfx-match-rcu.patch").write_text("not a diff at all\n")
    return "no unified diff hunks"


@pytest.mark.parametrize("breaker", [_break_series_syntax, _break_series_missing_file,
                                     _break_patch_body])
def test_broken_patches_dir_is_one_line_error(tmp_path: Path,
                                              breaker: Callable[[Path], str]) -> None:
    patches = _patches_copy(tmp_path)
    message = breaker(patches)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"), "--patches",
               str(patches))
    assert_one_line_error(proc, message)
    assert not (tmp_path / "cache" / "debs").exists()  # refused before fetching anything


@pytest.mark.integration
def test_half_applied_real_tree_is_one_line_error_and_untouched(tmp_path: Path) -> None:
    """A real 6.1.176 tree where one line of the fix was applied by hand: the fix neither applies
    nor reverts. `inv verify --source` says so in one line; the tree is untouched."""
    from test_patching import tree_digest

    shared = warm_test_cache()
    ws = sources.fetch(shared, target_of())
    tree = tmp_path / "tree"
    shutil.copytree(ws.source_tree, tree, symlinks=True)
    clc = tree / "net" / "smc" / "smc_clc.c"
    text = clc.read_text()
    line = "\t\trc = smc_clc_prfx_match4_rcu(dst->dev, prop);\n"
    assert text.count(line) == 1
    clc.write_text(text.replace(line, line.replace("dst->dev", "dev")))
    before = tree_digest(tree)
    proc = inv("verify", "--source", str(tree), "--kdir", str(ws.kdir), "--cache",
               str(tmp_path / "cache"))
    assert_one_line_error(proc, "CVE-2025-40168")
    assert tree_digest(tree) == before


# --------------------------------------------------------------------------- tool failures


@pytest.mark.parametrize(("version", "hidden", "install"), [
    (KERNEL, "make", "apt-get install -y --no-install-recommends make"),
    (KERNEL, "gcc-12", "gcc-12"),
    ("6.12.107", "pahole", "dwarves"),
])
@pytest.mark.integration
def test_missing_build_tool_is_named_with_its_install_command(
        tmp_path: Path, version: str, hidden: str, install: str) -> None:
    shared = warm_test_cache(version).root
    path = fake_path(tmp_path, lambda n: hidden in n or n == "apt-get")
    proc = inv("verify", "--kernel", version, "--cache", str(shared), env=cli_env(path))
    assert_one_line_error(proc, "missing build tools", install)


@pytest.mark.parametrize(("tool", "package"), [("xz", "xz-utils"), ("dpkg-deb", "dpkg")])
def test_missing_extraction_tool_is_named(tmp_path: Path, tool: str, package: str) -> None:
    path = fake_path(tmp_path, lambda n: n in (tool, "apt-get"))
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"),
               env=cli_env(path))
    assert_one_line_error(proc, f"missing fetch tools ({tool})",
                          f"apt-get install -y --no-install-recommends {package}")


def test_missing_apt_is_named(tmp_path: Path) -> None:
    path = fake_path(tmp_path, lambda n: n.startswith("apt-"))
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"),
               env=cli_env(path))
    assert_one_line_error(proc, "apt-get not found", "--source")


def test_unreachable_archive_is_one_line(tmp_path: Path) -> None:
    """Every request goes to a proxy on loopback port 9, where nothing listens."""
    proxy = "http://127.0.0.1:9"
    env = cli_env(http_proxy=proxy, https_proxy=proxy, HTTP_PROXY=proxy, HTTPS_PROXY=proxy)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"), env=env,
               timeout=300)
    assert_one_line_error(proc, "apt-get update failed", "unreachable")
    assert leftovers(tmp_path / "cache") == []


def test_missing_qemu_names_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", fake_path(tmp_path, lambda n: n.startswith(("qemu", "apt-"))))
    with pytest.raises(ToolMissing, match="apt-get install -y --no-install-recommends "
                                          "qemu-system-x86"):
        vm.ensure_host_tools(["qemu-system-x86_64"])


def test_missing_compiler_without_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As root smcpatch installs what's missing; with no apt-get it says what to run instead."""
    monkeypatch.setenv("PATH", fake_path(tmp_path, lambda n: "gcc-12" in n or n == "apt-get"))
    config = build.KernelConfig({"CONFIG_CC_VERSION_TEXT": "x86_64-linux-gnu-gcc-12 (Debian) 12.2"})
    with pytest.raises(ToolMissing, match="apt-get install -y --no-install-recommends gcc-12"):
        build.ensure_toolchain(config)


# --------------------------------------------------------------------------- report


def test_interrupted_report_write_keeps_the_previous_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smcpatch.stages import report

    path = tmp_path / "r.json"
    report.write_json(path, {"schema": "old"})

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_json(path, {"schema": "new"})
    assert json.loads(path.read_text()) == {"schema": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
