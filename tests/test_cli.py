"""The command line as a user meets it: `inv ...` in a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcpatch import cli

ROOT = Path(__file__).resolve().parents[1]


def inv(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SMCPATCH_DEBUG", None)
    if cache is not None:
        env["SMCPATCH_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and text in lines[0], lines


def test_list_shows_every_task() -> None:
    proc = inv("--list")
    assert proc.returncode == 0
    for name in ("kernels", "verify", "inspect", "test"):
        assert name in proc.stdout


@pytest.mark.parametrize("args", [("race", "--bogus"), ("verify", "--arches", "all"),
                                  ("nosuchtask",)])
def test_inv_bad_options_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    """invoke's own parser would exit 1 (our "not fixed") with "No idea what ... is!"."""
    proc = inv(*args)
    assert_one_line_error(proc, 2, "")
    assert proc.stdout == ""


def test_kernels_lists_the_matrix() -> None:
    proc = inv("kernels")
    assert proc.returncode == 0, proc.stderr
    for text in ("6.1.176-1", "6.12.117-1~deb12u1", "linux-headers-6.1.0-50-amd64",
                 "6.1.0-56-amd64"):
        assert text in proc.stdout
    foreign = inv("kernels", "--arch", "s390x")
    assert foreign.returncode == 0, foreign.stderr
    assert "linux-headers-6.1.0-50-s390x:s390x" in foreign.stdout
    assert "linux-kbuild-6.1" in foreign.stdout and "amd64" not in foreign.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("verify", "--kernel", "not-a-version"), "is not a kernel version"),
        (("verify", "--flavour", "sparc64"), "unknown flavour"),
        (("verify", "--arch", "mips"), "unknown architecture 'mips'"),
        (("verify", "--arch", "s390x", "--flavour", "cloud"), "s390x has s390x"),
        (("dkms", "--kernel", "6.1.176", "--arch", "arm64", "--out", "/tmp/x", "--check"),
         "check the arm64 package on an arm64 system"),
        (("verify", "--source", "/nonexistent", "--kdir", "/nonexistent"), "has no net/smc"),
        (("verify", "--source", "/tmp"), "--source and --kdir go together"),
        (("verify", "--fix", "CVE-0000-0000", "--kernel", "6.1.176"), "unknown fix"),
        (("inspect", "--module", "/nonexistent/smc.ko"), "no such file"),
        (("scan", "--vex-format", "csaf"), "--vex-format, --vex-publisher and --vex-namespace "
                                           "go with --vex PATH"),
        (("verify", "--vex", "/dev/null", "--vex-format", "spdx"),
         "--vex-format 'spdx': choose openvex, csaf, cyclonedx"),
        (("scan", "--vex", "/dev/null", "--vex-format", "csaf", "--vex-format", "cyclonedx"),
         "not into a device or pipe"),
        (("verify", "--vex", "/dev/null", "--vex-namespace", "smcpatch.invalid"),
         "--vex-namespace 'smcpatch.invalid': an http(s) URL"),
        (("race", "--sanitizer", "tsan"), "--sanitizer 'tsan': choose kcsan, kasan"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...],
                                         message: str) -> None:
    assert_one_line_error(inv(*args, cache=tmp_path), 2, message)


def test_inspect_refuses_a_non_elf_file(tmp_path: Path) -> None:
    bogus = tmp_path / "smc.ko"
    bogus.write_text("#!/bin/sh\necho not a module\n")
    assert_one_line_error(inv("inspect", "--module", str(bogus)), 2, "not an ELF")


def test_console_script_has_the_checkout_tasks() -> None:
    """`smcpatch X` and `inv X` are the same tasks: tasks.py adds only the developer ones."""
    sys.path.insert(0, str(ROOT))
    import tasks

    checkout = set(tasks.ns.tasks)
    assert set(cli.namespace.tasks) == checkout - {"test", "lint"}
    for name in cli.namespace.tasks:
        assert tasks.ns.tasks[name].body is cli.namespace.tasks[name].body


@pytest.mark.parametrize("task", ["kernels", "verify", "inspect", "dkms", "report", "matrix",
                                  "bench"])
def test_every_task_shows_its_help(task: str) -> None:
    """`inspect --help` once took `--help` for the module's path: required options are options."""
    proc = inv(task, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Usage:") and f" {task} [--options]" in proc.stdout


@pytest.mark.parametrize(("args", "text"), [
    (("inspect",), "--module PATH is required"),
    (("report",), "--merge DIR is required"),
    (("dkms", "--out", "x"), "--kernel is required"),
])
def test_a_missing_required_option_is_one_line(args: tuple[str, ...], text: str) -> None:
    assert_one_line_error(inv(*args), 2, text)


INVOKE_ONLY = ("--pty", "--dry", "--echo", "--warn-only", "--prompt-for-sudo-password",
               "--complete", "--collection", "--search-root", "--command-timeout")


def smcpatch(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "smcpatch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_console_script_shows_only_its_own_tasks_and_options() -> None:
    proc = smcpatch("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: smcpatch")
    assert not any(option in proc.stdout for option in INVOKE_ONLY)
    tasks = [ln.split()[0] for ln in proc.stdout.split("tasks:\n", 1)[1].split("\n\n", 1)[0]
             .splitlines()]
    assert tasks == list(cli.namespace.tasks)
    for line in proc.stdout.splitlines():  # summaries whole: sentences that fit 80 columns
        assert len(line) <= 80, line
    assert smcpatch("-h").stdout == proc.stdout
    assert smcpatch("--version").stdout.startswith("smcpatch ")


@pytest.mark.parametrize("task", list(cli.namespace.tasks))
def test_every_tasks_help_is_help_with_defaults_and_exit_codes(task: str) -> None:
    for flag in ("-h", "--help"):
        proc = smcpatch(task, flag)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        assert text.startswith(f"usage: smcpatch {task} [options]")
        assert "Exit 0" in text, text  # the task's exit codes
        assert not any(option in text for option in INVOKE_ONLY)
        assert all(len(line) <= 80 for line in text.splitlines()), text
    options = cli._options(cli.namespace.tasks[task])
    summary = cli._summary(cli.namespace.tasks[task])
    assert summary.endswith(".") and len(summary) <= 70, summary
    for option, (param, default) in options.items():
        help_text = cli.namespace.tasks[task].help.get(param, "")
        assert help_text, f"{task} {option} has no help"
        if default not in (None, False, "", []) and not isinstance(default, bool):
            assert "default" in help_text, f"{task} {option}: its default is not said"


def test_no_short_flag_means_two_things() -> None:
    """smcpatch has no short flags but -h (help), -V and -l at the top."""
    for task in cli.namespace.tasks.values():
        assert not any(len(name) == 1 for arg in task.get_arguments() for name in arg.names)


@pytest.mark.parametrize("args", [("matrix", "--format", "json"), ("kernels",),
                                  ("kernels", "--arch", "all", "--flavour", "all")])
def test_a_closed_pipe_is_a_quiet_exit(args: tuple[str, ...]) -> None:
    """`smcpatch kernels | head -1`: the reader gone, a quiet exit as coreutils make it (128 +
    SIGPIPE), nothing on stderr; print and rich output alike."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        proc = subprocess.run([sys.executable, "-m", "smcpatch", *args], cwd=ROOT,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
                              check=False)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", (proc.returncode, proc.stderr)
