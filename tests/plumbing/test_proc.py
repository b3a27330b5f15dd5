"""plumbing/proc: every child through one place, each with a timeout; a timeout, a failure or a
cap is the caller's one-line error and the child's whole group is gone."""

from __future__ import annotations

import ast
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from smcpatch.errors import BuildError, FetchError, SmcpatchError
from smcpatch.plumbing import proc

SRC = Path(__file__).resolve().parents[2] / "src" / "smcpatch"
# the QEMU guest's own programs run inside the guest, where smcpatch's package is not installed:
# they start the guest's children with subprocess themselves
GUEST_PROGRAMS = SRC / "data" / "guest"
TOKEN = "3017.61"  # a sleep no other process on the machine runs


def _imports_subprocess(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "subprocess"
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "subprocess":
            return True
    return False


def test_no_module_outside_plumbing_imports_subprocess() -> None:
    """Children go through plumbing/proc (own group, the reaper, a timeout); the one exception
    is data/guest/*, which runs inside the QEMU guest."""
    offenders = [str(p.relative_to(SRC)) for p in sorted(SRC.rglob("*.py"))
                 if "plumbing" not in p.relative_to(SRC).parts
                 and not p.is_relative_to(GUEST_PROGRAMS) and _imports_subprocess(p)]
    assert offenders == []
    # the walk does see an import where there is one (the guest's programs have them)
    assert any(_imports_subprocess(p) for p in GUEST_PROGRAMS.glob("*.py"))


def test_every_child_outside_proc_is_started_through_it() -> None:
    """Inside plumbing too, only proc.py itself starts children with subprocess."""
    users = [p.name for p in sorted((SRC / "plumbing").glob("*.py")) if _imports_subprocess(p)]
    assert users == ["proc.py"]


def _survivors() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if f"sleep {TOKEN}".encode() in cmdline:
                found.append(pid)
    return found


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    for pid in _survivors():
        os.kill(int(pid), signal.SIGKILL)


def _gone_within(seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while _survivors() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _survivors()


def test_timeout_is_the_callers_error_and_kills_the_whole_group() -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^apt-get update timed out after 0.5 s$"):
        proc.run(["sh", "-c", f"sleep {TOKEN} & sleep {TOKEN}"], timeout=0.5,
                 what="apt-get update", error=FetchError)
    assert time.monotonic() - started < 5
    assert _gone_within(5) == []


def test_timeout_without_a_caller_error_is_still_one_smcpatch_line() -> None:
    with pytest.raises(SmcpatchError, match=r"^sh timed out after 0.2 s$"):
        proc.run(["sh", "-c", f"sleep {TOKEN}"], timeout=0.2)


def test_check_names_the_failure_with_stderr_tail() -> None:
    with pytest.raises(BuildError, match=r"^gcc failed \(exit 3\): the last line$"):
        proc.run(["sh", "-c", "echo first >&2; echo the last line >&2; exit 3"], timeout=10,
                 capture_output=True, text=True, check=True, what="gcc", error=BuildError)


def test_captured_output_and_input() -> None:
    done = proc.run(["tr", "a-z", "A-Z"], input="abc", capture_output=True, text=True,
                    timeout=10)
    assert (done.returncode, done.stdout) == (0, "ABC")


def test_limit_stops_an_endless_producer_and_keeps_one_byte_past_the_cap() -> None:
    """A decompression bomb: stdout read up to limit + 1 bytes, then the group is killed."""
    started = time.monotonic()
    done = proc.run(["sh", "-c", f"sleep {TOKEN} & exec yes"], capture_output=True,
                    timeout=30, limit=100_000)
    assert len(done.stdout) == 100_001
    assert time.monotonic() - started < 10
    assert _gone_within(5) == []


def test_limit_returns_small_outputs_whole_with_stderr_and_code(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"x" * 5000)
    with open(source, "rb") as handle:
        done = proc.run(["sh", "-c", "cat; echo oops >&2; exit 4"], stdin=handle,
                        capture_output=True, timeout=30, limit=1 << 20)
    assert (done.returncode, done.stdout, done.stderr) == (4, b"x" * 5000, b"oops\n")


def test_limit_times_out_like_any_child() -> None:
    with pytest.raises(SmcpatchError, match="zstd timed out"):
        proc.run(["sh", "-c", f"sleep {TOKEN}"], capture_output=True, timeout=0.3,
                 limit=10, what="zstd")
    assert _gone_within(5) == []


def test_sigterm_is_terminated_and_its_exit_code() -> None:
    proc.handle_signals()
    with pytest.raises(proc.Terminated) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode
    assert proc.exit_code(caught.value) == 143
    assert proc.exit_code(KeyboardInterrupt()) == 130
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_the_reaper_outlives_nothing_but_a_kill_of_the_run() -> None:
    """A child started through proc by a process that is then SIGKILLed dies with it."""
    code = ("import sys; sys.path[:0] = " + repr([str(SRC.parent)]) + "\n"
            "from smcpatch.plumbing import proc\n"
            f"proc.spawn(['sleep', '{TOKEN}'])\n"
            "print('up', flush=True)\n"
            "import time; time.sleep(60)\n")
    parent = proc.spawn([sys.executable, "-c", code], stdout=proc.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "up\n"
        assert _survivors()
    finally:
        proc.kill_group(parent)
    assert _gone_within(10) == []


def test_a_signal_wrapped_by_python_is_still_that_signal() -> None:
    """A signal while a class is made (during an import) reaches the edge as RuntimeError("Error
    calling __set_name__ ...") in Python 3.11: the edge still sees the signal behind it."""
    class Named:
        def __set_name__(self, owner: type, name: str) -> None:
            raise proc.Terminated()

    with pytest.raises(BaseException) as caught:
        type("Made", (), {"attr": Named()})
    assert proc.interrupt_behind(caught.value) is not None
    assert proc.exit_code(proc.interrupt_behind(caught.value)) == 143
    assert proc.interrupt_behind(RuntimeError("a bug")) is None
    try:  # an outcome already reported, raised `from None`, is not taken for the signal again
        raise SmcpatchError("x") from proc.Interrupted()
    except SmcpatchError as exc:
        assert proc.interrupt_behind(exc) is not None
    try:
        try:
            raise proc.Interrupted()
        except KeyboardInterrupt:
            raise SmcpatchError("reported") from None
    except SmcpatchError as exc:
        assert proc.interrupt_behind(exc) is None


def test_after_an_interrupt_no_worker_starts_a_child() -> None:
    """The race behind a run that did not stop: the interrupt killed every group while a worker
    was about to start make, which then ran on while the pool's shutdown waited for it."""
    from concurrent.futures import ThreadPoolExecutor

    def worker_run() -> int:
        return proc.run(["true"], timeout=10).returncode

    with pytest.raises(KeyboardInterrupt), ThreadPoolExecutor(1) as pool, \
            proc.stopped_on_interrupt():
        raise proc.Interrupted()
    with ThreadPoolExecutor(1) as pool, \
            pytest.raises(SmcpatchError, match="^true not started: the run is stopping$"):
        pool.submit(worker_run).result()
    assert proc.run(["true"], timeout=10).returncode == 0  # the main thread reports and exits
    with ThreadPoolExecutor(1) as pool, proc.stopped_on_interrupt():  # a new pool: a new run
        assert pool.submit(worker_run).result() == 0
