"""Install and first run as a packager does them: a wheel in a fresh venv, used from another
directory; host tools installed once, waiting for another package manager's dpkg lock.

Both would have caught what users met: package data missing from the wheel, and parallel targets
racing each other for dpkg's lock on a fresh machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smcpatch import cli
from smcpatch.kernels.targets import Target
from smcpatch.pipeline import prepare as pipeline
from smcpatch.pipeline.fetch import Workspace
from smcpatch.plumbing import hostpkg
from smcpatch.plumbing.cache import Cache
from tests.schemas import assert_valid

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: int = 900) -> subprocess.CompletedProcess[str]:
    # never the checkout's src on the path: pip would take its egg-info for an installed
    # smcpatch and install nothing into the fresh venv
    clean = {k: v for k, v in (env or os.environ).items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this checkout, installed in a fresh venv: its bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    proc = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"),
                str(ROOT)], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list((root / "dist").glob("smcpatch-*.whl"))
    assert len(wheels) == 1
    venv = root / "venv"
    proc = run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    assert proc.returncode == 0, proc.stderr
    proc = run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv / "bin"


def smcpatch(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SMCPATCH_CACHE", "SMCPATCH_DEBUG")}
    env["COLUMNS"] = "200"
    return run([str(bin_dir / "smcpatch"), *args], cwd=cwd, env=env)


needs_root_apt = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"),
                                    reason="installs a host package: root and apt-get")


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", *args], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)


@pytest.fixture
def pahole_removed() -> Iterator[None]:
    """pahole (which 6.12's module builds need; bookworm's dwarves is a transitional package for
    it) removed from the host for the test: small, and nothing else depends on it. It is back
    afterwards, whatever the test did."""
    proc = _apt("remove", "-y", "pahole", "dwarves")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert hostpkg.which("pahole") is None
    try:
        yield
    finally:
        if hostpkg.which("pahole") is None:
            _apt("install", "-y", "--no-install-recommends", "dwarves")


@contextmanager
def dpkg_lock_held() -> Iterator[None]:
    """Hold dpkg's frontend lock as apt does: a POSIX (fcntl) lock; flock(1) would not stop apt."""
    fd = os.open(hostpkg.DPKG_FRONTEND_LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # waits for any package manager already running
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.integration
def test_wheel_in_a_fresh_venv_works_from_any_directory(
        installed: Path, tmp_path: Path, test_cache: Cache, matrix: dict[str, Target],
        workspace_for: Callable[[str], Workspace]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = smcpatch(installed, "--version", cwd=elsewhere)
    assert proc.returncode == 0 and proc.stdout.strip() == f"smcpatch {cli.__version__}"

    proc = smcpatch(installed, "kernels", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "6.1.176-1" in proc.stdout and "site-packages" in proc.stdout  # its own matrix

    ws = workspace_for("6.1.176")
    assert ws.shipped_module is not None
    proc = smcpatch(installed, "inspect", "--module", str(ws.shipped_module), "--json",
                    cwd=elsewhere)
    assert proc.returncode == 1, proc.stderr  # Debian's 6.1.176 module: vulnerable
    assert json.loads(proc.stdout)["verdict"] == "vulnerable"
    assert_valid(json.loads(proc.stdout), "smcpatch-inspect/1")  # the wheel's own schema

    # warm: the test cache already holds this kernel's build (the same as the checkout's run)
    pipeline.verify_target(test_cache, matrix["6.1.176"], pipeline.Options(), workspace=ws)
    report = tmp_path / "r.json"
    proc = smcpatch(installed, "verify", "--kernel", "6.1.176", "--cache", str(test_cache.root),
                    "--json", str(report), cwd=elsewhere)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr)
    [target] = json.loads(report.read_text())["targets"]
    assert (target["source_state"], target["after"]["verdict"], target["ok"]) == (
        "vulnerable", "fixed", True)
    assert target["from_cache"]["build"] is True

    proc = smcpatch(installed, "verify", "--kernel", "6.1.176", "--cache", str(test_cache.root),
                    "--patches", str(tmp_path / "nowhere"), cwd=elsewhere)
    assert proc.returncode == 2 and "patch series not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_root_apt
@pytest.mark.integration
def test_parallel_targets_install_once_and_wait_for_dpkgs_lock(
        tmp_path: Path, test_cache: Cache, workspace_for: Callable[[str], Workspace],
        pahole_removed: None) -> None:
    """Two 6.12 targets at once, both needing pahole, while another package manager holds dpkg's
    lock: the run says it waits, apt-get install runs once, and both targets end verified."""
    for version in ("6.12.107", "6.12.117"):
        workspace_for(version)  # fetched already: this test is about the tools, not downloads
    log = tmp_path / "apt-get.log"
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("apt-get")
    (shim / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (shim / "apt-get").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "COLUMNS": "200"}
    env.pop("SMCPATCH_DEBUG", None)
    args = [sys.executable, "-m", "invoke", "verify", "--kernel", "6.12.107", "--kernel",
            "6.12.117", "--parallel", "2", "--cache", str(test_cache.root)]
    with dpkg_lock_held():
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            installing = _wait_for(lambda: log.exists() and " install " in log.read_text(), 600)
            time.sleep(3)  # apt is now waiting for the lock we hold
            assert proc.poll() is None, "the run did not wait for dpkg's lock"
        except BaseException:
            proc.kill()
            raise
    stdout, stderr = proc.communicate(timeout=1800)
    assert installing, log.read_text() if log.exists() else "apt-get never ran"
    assert proc.returncode == 0, (stdout[-3000:], stderr)
    assert "waiting for dpkg's lock" in stdout
    installs = [line for line in log.read_text().splitlines() if " install " in f" {line} "]
    assert len(installs) == 1 and installs[0].endswith("dwarves"), installs
    assert hostpkg.which("pahole") is not None
