"""Helpers of the fault tests: the CLI in a subprocess, one-line error checks, fake PATHs, seeded
caches, and runs killed at a chosen moment.
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
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch.errors import ExtractError
from smcpatch.kernels.matrix import load_matrix
from smcpatch.kernels.targets import Target
from smcpatch.plumbing.cache import TMP_PREFIX, Cache

ROOT = Path(__file__).resolve().parents[1]


KERNEL = "6.1.176"


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
    from tests.conftest import real_workspace

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


def _sigint_as_in_a_terminal() -> None:
    """A run started from a background job inherits SIGINT ignored (POSIX shells do that): give
    it the default disposition, as a terminal's foreground job has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """`inv verify --kernel K --cache C` in its own process group, killed on a condition."""

    def __init__(self, cache: Path, *extra: str) -> None:
        self.cache = cache
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "verify", "--kernel", KERNEL, "--cache", str(cache),
             *extra], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)

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


def _assert_refused(exc: pytest.ExceptionInfo[ExtractError], cache: Path, part: str) -> None:
    message = exc.value.one_line()
    assert "refusing" in message or "outside the extraction directory" in message, message
    assert not [p for p in (cache / part).iterdir()], "a hostile entry or temp dir was kept"


def _df_used(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


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
