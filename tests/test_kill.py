"""Children die with the run: a kill of smcpatch (SIGKILL, SIGTERM, Ctrl-C) leaves no make (and
nothing make started) behind, SIGTERM behaves like Ctrl-C, and an interrupt stops the run within
seconds instead of waiting for the build. The build is a user's tree (no download) whose `make`
is a stand-in that starts a grandchild and sleeps, so the test is fast and the tree small."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import synthetic
from tests.elfobjs import require_gcc, require_tool

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "3017.25"  # a sleep no other process on the machine runs


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A kernel tree holding a vulnerable smc_clc.c (from our own patch) and a build dir."""
    tree, kdir = tmp_path / "linux", tmp_path / "build"
    smc = tree / "net" / "smc"
    smc.mkdir(parents=True)
    (smc / "smc_clc.c").write_text((synthetic.data_dir() / "smc_clc_vulnerable.c").read_text())
    (smc / "Makefile").write_text("obj-$(CONFIG_SMC) += smc.o\nsmc-y := smc_clc.o\n")
    (tree / "include" / "net").mkdir(parents=True)
    (tree / "include" / "net" / "dst.h").write_text(
        "static inline struct net_device *dst_dev_rcu(const struct dst_entry *dst);\n")
    (kdir / "include" / "generated").mkdir(parents=True)
    (kdir / "include" / "generated" / "utsrelease.h").write_text(
        '#define UTS_RELEASE "6.1.0-99-amd64"\n')
    (kdir / "Makefile").write_text("all:\n")
    (kdir / "Module.symvers").write_text("")
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    (kdir / ".config").write_text(f'CONFIG_CC_VERSION_TEXT="{gcc.replace("gcc ", "gcc-12 ")}"\n'
                                  "CONFIG_SMC=m\n")
    return tree, kdir


def _fake_make(tmp_path: Path) -> Path:
    """`make` that marks it started, starts a grandchild and waits: a build that never ends."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(f"#!/bin/sh\ntouch {tmp_path}/make-started\nsleep {TOKEN} &\n"
                    f"sleep {TOKEN}\n")
    make.chmod(0o755)
    return bin_dir


def _survivors() -> list[str]:
    proc = subprocess.run([require_tool("pgrep", "procps"), "-af", f"sleep {TOKEN}"],
                          capture_output=True, text=True)
    return [ln for ln in proc.stdout.splitlines() if ln.strip()]


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    require_gcc()
    require_tool("patch", "patch")
    tree, kdir = _tree(tmp_path)
    env = {**os.environ, "PATH": f"{_fake_make(tmp_path)}:{os.environ['PATH']}",
           "SMCPATCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "smcpatch", "verify", "--source", str(tree),
                             "--kdir", str(kdir)], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (tmp_path / "make-started").exists():
        if proc.poll() is not None:
            pytest.fail(f"smcpatch ended before the build: {proc.communicate()}")
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    time.sleep(0.3)  # make's grandchild is up
    assert _survivors(), "the stand-in make did not start its children"
    return proc


def _gone_within(seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while _survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    return _survivors()


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    for line in _survivors():  # never leave a stray sleep on the machine, whatever happened
        os.kill(int(line.split()[0]), signal.SIGKILL)


def test_sigkill_of_smcpatch_leaves_no_make_behind(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    proc.kill()  # smcpatch alone: its children are in sessions of their own
    proc.communicate(timeout=30)
    assert _gone_within(10) == []


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_stop_at_once_and_clean_up(tmp_path: Path, sig: int, code: int,
                                                      word: str) -> None:
    proc = _start(tmp_path)
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == code, (out, err)
    assert word in err and "Traceback" not in err
    assert took < 5, f"stopping took {took:.1f} s"
    assert _gone_within(5) == []
    cache = tmp_path / "cache"
    assert not [p for p in cache.rglob(".smcpatch-tmp-*") if "locks" not in p.parts]
