"""Signals at any moment, and standard streams that are not what a terminal is: SIGTERM ends the
run with 143 and Ctrl-C with 130, quietly (one line at most, never a traceback), from the first
instruction of `python -m smcpatch` on, start-up imports included; a closed stdout, stdout on a
full device and an ASCII-only encoding are a quiet exit, one line and exit 2, and escaped text.

"The first instruction" is observed from outside: smcpatch.__main__ catches SIGTERM from its
first line, which /proc/<pid>/status shows (SigCgt); the interpreter's own start-up before that
(site, .pth files) is Python's, not ours, and the signals are sent only after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import elfobjs
from tests.test_kill import _fake_make, _survivors, _tree

ROOT = Path(__file__).resolve().parents[1]
# after our handlers are in place: start-up imports (rich, invoke, the task's command), the
# argument checks, classify; the later ones reach the (stand-in) build
DELAYS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SMCPATCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH":
            f"{ROOT / 'src'}:{ROOT}", **extra}


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "smcpatch", *args], env=env, cwd=cwd,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln.split()[1] for ln in status.splitlines()
                      if ln.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _signal_after_start(proc: subprocess.Popen[str], sig: int, delay: float) -> bool:
    """Send `sig` `delay` s after smcpatch's first instruction; False if it had already ended."""
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "smcpatch never reached its first instruction"
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True


def _assert_quiet(proc: subprocess.Popen[str], code: int, what: str) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (what, proc.returncode, err)
    assert "Traceback" not in err, (what, err)
    assert len(err.strip().splitlines()) <= 1, (what, err)
    return err


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    for line in _survivors():
        os.kill(int(line.split()[0]), signal.SIGKILL)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_at_any_moment_of_start_up_is_a_quiet_exit(tmp_path: Path, sig: int,
                                                            code: int) -> None:
    elfobjs.require_gcc()
    elfobjs.require_tool("patch", "patch")
    tree, kdir = _tree(tmp_path)
    env = _env(tmp_path, PATH=f"{_fake_make(tmp_path)}:{os.environ['PATH']}")
    signalled = 0
    for delay in DELAYS:
        proc = _start(["verify", "--source", str(tree), "--kdir", str(kdir)], env, tmp_path)
        if _signal_after_start(proc, sig, delay):
            signalled += 1
            _assert_quiet(proc, code, f"{signal.Signals(sig).name} at +{delay} s")
        else:
            proc.communicate(timeout=60)
    assert signalled == len(DELAYS), "smcpatch ended before a signal was sent"
    deadline = time.monotonic() + 10
    while _survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _survivors() == []


def test_sigterm_early_in_dkms_never_a_traceback(tmp_path: Path) -> None:
    """The issue's case: SIGTERM 0.1 .. 0.5 s into `dkms` (start-up imports, resolving the
    kernel through apt) printed a traceback ending in `Terminated` and exit 1."""
    env = _env(tmp_path)
    signalled = 0
    for i in range(10):
        proc = _start(["dkms", "--kernel", "6.1.176"], env, tmp_path)
        if _signal_after_start(proc, signal.SIGTERM, 0.1 + 0.1 * (i % 5)):
            signalled += 1
            _assert_quiet(proc, 143, f"SIGTERM at +{0.1 + 0.1 * (i % 5):.1f} s")
        else:
            proc.communicate(timeout=60)
    assert signalled >= 5


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_inv_from_tasks_py_on_is_as_quiet(tmp_path: Path, sig: int, code: int) -> None:
    """`inv`: from tasks.py's first instruction (invoke's own start-up before it is invoke's),
    through its parsing and the task, to invoke's own exit (which would say exit 1)."""
    env = _env(tmp_path)
    signalled = 0
    for delay in (0.0, 0.1, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "dkms",
                                 "--kernel", "6.1.176"], env=env, cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if _signal_after_start(proc, sig, delay):
            signalled += 1
            _assert_quiet(proc, code, f"inv, {signal.Signals(sig).name} at +{delay} s")
        else:
            proc.communicate(timeout=60)
    assert signalled >= 3


def test_version_with_stdout_closed_is_a_quiet_exit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "smcpatch", "--version"], env=_env(tmp_path),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          pass_fds=(), preexec_fn=lambda: os.close(1))
    assert (done.returncode, done.stderr) == (0, "")


def test_closed_standard_fds_are_not_reused_by_files_the_run_opens(tmp_path: Path) -> None:
    """With fd 1 closed, the first file opened would get number 1 and receive what is printed:
    start() puts /dev/null there first."""
    code = ("import os, sys\n"
            "from smcpatch.__main__ import start\n"
            "start()\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
            "print('printed')\n"
            "sys.stdout.flush()\n"
            "sys.stderr.write(str(fd))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], env=_env(tmp_path),
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: (os.close(0), os.close(1)))
    assert done.returncode == 0, done.stderr
    assert int(done.stderr) > 2
    assert (tmp_path / "f").read_text() == ""


@pytest.mark.parametrize("args", [["--version"], ["kernels", "--help"], ["matrix"]])
def test_stdout_on_a_full_device_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "smcpatch", *args], env=_env(tmp_path),
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("error: cannot write to standard output: No space left on "
                           "device\n")


def test_an_ascii_only_stdout_gets_escapes_not_an_exit_3(tmp_path: Path) -> None:
    """PYTHONIOENCODING=ascii and a module whose vermagic is not ASCII."""
    source = elfobjs.SMC_CLC_C.replace("vermagic=6.1.0-50-amd64", "vermagic=6.1.0-50-amd64-é")
    module = elfobjs.compile_c(tmp_path, source, "smc.ko", debug=False, defines=("MODINFO",))
    done = subprocess.run([sys.executable, "-m", "smcpatch", "inspect", "--module", str(module)],
                          env=_env(tmp_path, PYTHONIOENCODING="ascii"), capture_output=True,
                          timeout=120)
    assert done.returncode in (0, 1, 2), done.stderr
    assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr
    assert b"6.1.0-50-amd64-\\xe9" in done.stdout
    done.stdout.decode("ascii")  # nothing but ASCII reached the stream


def test_a_3_gb_patch_file_is_refused_by_its_size_before_reading(tmp_path: Path) -> None:
    """Reads capped before they start: a --patches series naming a 3 GB (sparse) patch is one
    line and exit 2, in seconds and without the file in memory, before any download."""
    patches = tmp_path / "patches"
    patches.mkdir()
    package = ROOT / "src" / "smcpatch" / "data" / "patches"
    for source in package.iterdir():
        (patches / source.name).write_bytes(source.read_bytes())
    huge = sorted(patches.glob("*.patch"))[0]
    with open(huge, "r+b") as handle:
        handle.truncate(3 * 1024**3)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "smcpatch", "verify", "--kernel", "6.1.176",
                           "--patches", str(patches)], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: {huge}: 3072.0 MB, larger than a patch can be "
                           "(8.0 MB at most)\n")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "cache" / "debs").exists()
