"""Tried as a hostile user would: device nodes, FIFOs, /dev/zero, symlinks, bombs of every
compression, foreign temp names beside outputs, garbage for every numeric option, forged reports.
Each case is refused in one line with exit 2 before any work, or handled, and never touches what
is not smcpatch's own; no command line reaches an internal error (exit 3). Fast: no downloads
(tests/integration/test_hostile_real.py has the cases that need real kernels)."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smcpatch.commands import inspect as inspect_cmd
from smcpatch.errors import BadInput, InspectError
from smcpatch.inspection import elf, loading
from smcpatch.outputs import jsonreport
from smcpatch.plumbing import files
from smcpatch.plumbing.cache import publish_dir
from tests.pipeline.test_report import _module, _report

ROOT = Path(__file__).resolve().parents[1]
QUICK = 60  # seconds: every case here is refused or done well before this


def smcpatch(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
             timeout: float = QUICK) -> subprocess.CompletedProcess[str]:
    """The console script, as a user runs it (python -m smcpatch)."""
    environ = {**os.environ, "COLUMNS": "100", **(env or {})}
    environ.pop("SMCPATCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "smcpatch", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout, check=False)


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line on stderr starting with error:, no traceback; the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], lines
    return lines[0]


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """A directory of one well-formed verify report (for report --merge)."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    jsonreport.write_json(jobs / "r.json", jsonreport.document([_report("6.1.176")]))
    return jobs


# -- 1. outputs never replace what is not a regular file of ours -----------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_given_as_output_is_written_through_not_replaced(tmp_path: Path,
                                                                  reports: Path) -> None:
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    proc = smcpatch("report", "--merge", str(reports), "--json", str(device))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(device.lstat().st_mode), "the device node was replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs", "null"]  # no temp left


def test_a_symlink_output_is_refused_and_its_target_untouched(tmp_path: Path,
                                                               reports: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    refused(smcpatch("report", "--merge", str(reports), "--json", str(link)), "symbolic link")
    assert link.is_symlink() and target.read_text() == "old"


def test_a_replaced_output_keeps_its_mode(tmp_path: Path, reports: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    target.chmod(0o640)
    assert smcpatch("report", "--merge", str(reports), "--json", str(target)).returncode == 0
    assert json.loads(target.read_text())["schema"] == "smcpatch-report/1"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a file we replace keeps its mode


def test_a_new_output_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files.write_output(tmp_path / "new.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("where", ["dir", "under-a-file", "proc"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
        tmp_path: Path, reports: Path, where: str) -> None:
    (tmp_path / "file").write_text("x")
    path = {"dir": tmp_path, "under-a-file": tmp_path / "file" / "r.json",
            "proc": Path("/proc/smcpatch-test.json")}[where]
    refused(smcpatch("report", "--merge", str(reports), "--json", str(path)), "--json")
    refused(smcpatch("verify", "--kernel", "6.1.176", "--json", str(path),
                     "--cache", str(tmp_path / "cache")), "--json")
    assert not (tmp_path / "cache" / "debs").exists()  # refused before any download


def test_an_interrupted_output_write_leaves_the_old_file_and_no_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")

    def boom(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        files.write_output(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


# -- 2. only names smcpatch made are deleted ------------------------------------------------
def test_foreign_temp_names_beside_an_output_survive(tmp_path: Path) -> None:
    theirs = [tmp_path / ".tmp-mydata.2024", tmp_path / ".tmp-pkg.1.2",
              tmp_path / f"{files.TMP_PREFIX}pkg", tmp_path / f"{files.TMP_PREFIX}other.1.2.3"]
    for path in theirs:
        path.mkdir()
        (path / "precious").write_text("keep me")
    with publish_dir(tmp_path / "pkg") as tmp:
        (tmp / "f").write_text("ours")
    assert all((p / "precious").read_text() == "keep me" for p in theirs)
    assert (tmp_path / "pkg" / "f").read_text() == "ours"


def test_a_results_or_out_directory_of_the_users_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.json").write_text("{}")
    refused(smcpatch("dkms", "--kernel", "6.1.176", "--out", str(mine),
                     "--cache", str(tmp_path / "cache")), "not empty")
    refused(smcpatch("bench", "--results", str(mine), "--cache", str(tmp_path / "cache")),
            "not empty")
    assert (mine / "thesis.json").read_text() == "{}"


# -- 6. unbounded reads and hangs -----------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("verify", "--matrix", "/dev/zero"),
    ("kernels", "--matrix", "/dev/zero"),
    ("inspect", "--module", "/dev/zero"),
    ("inspect", "--module", "/dev/null"),
    ("inspect", "--module", "/etc/hostname", "--symvers", "/dev/zero"),
    ("verify", "--sign-key", "/dev/zero", "--sign-cert", "/dev/zero"),
])
def test_devices_are_refused_at_once(args: tuple[str, ...], tmp_path: Path) -> None:
    started = time.monotonic()
    refused(smcpatch(*args, *(("--cache", str(tmp_path)) if args[0] == "verify" else ())),
            "not a regular file")
    assert time.monotonic() - started < 20


def test_fifos_are_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(smcpatch("inspect", "--module", str(fifo)), "not a regular file")
    refused(smcpatch("kernels", "--matrix", str(fifo)), "not a regular file")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    os.mkfifo(jobs / "r.json")
    refused(smcpatch("report", "--merge", str(jobs)), "not a regular file")


def test_a_symlink_loop_is_named_as_one(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    refused(smcpatch("inspect", "--module", str(tmp_path / "a")), "symlink loop")


def test_an_oversized_matrix_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "kernels.toml"
    big.write_bytes(b"#" * (2 * files.MB))
    refused(smcpatch("kernels", "--matrix", str(big)), "larger than a kernel matrix")


@pytest.mark.parametrize("kind", ["xz", "gz", "zst"])
def test_decompression_bombs_are_cut_off(kind: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the format, the output is capped (here at 1 MB; in use at loading.MAX_ELF_SIZE)."""
    monkeypatch.setattr(loading, "MAX_ELF_SIZE", 1 * files.MB)
    zeros = b"\0" * (8 * files.MB)
    path = tmp_path / f"smc.ko.{kind}"
    if kind == "xz":
        path.write_bytes(lzma.compress(zeros))
    elif kind == "gz":
        path.write_bytes(gzip.compress(zeros))
    else:
        if shutil.which("zstd") is None:
            pytest.skip("zstd is not installed")
        path.write_bytes(subprocess.run(["zstd", "-c", "-q"], input=zeros, capture_output=True,
                                        check=True).stdout)
    with pytest.raises(InspectError, match="decompresses to more than"):
        inspect_cmd.run(path)


# -- 7. bad input found up front, every numeric option -----------------------------------------
NUMERIC = [("verify", "--parallel"), ("verify", "--jobs"), ("dkms", "--jobs"),
           ("scan", "--parallel"), ("bench", "--threshold"), ("bench", "--runs"),
           ("bench", "--connections"), ("bench", "--timeout"), ("race", "--seconds"),
           ("race", "--attempts")]
GARBAGE = ["abc", "-1", "nan", "inf", "1e999", "0x10", ""]


@pytest.mark.parametrize(("task", "option"), NUMERIC)
def test_garbage_for_a_numeric_option_is_one_line(task: str, option: str,
                                                  tmp_path: Path) -> None:
    extra = {"dkms": ("--kernel", "6.1.176")}.get(task, ())
    for value in GARBAGE:
        proc = smcpatch(task, *extra, f"{option}={value}", "--cache", str(tmp_path))
        refused(proc, option)
    assert not (tmp_path / "debs").exists()


@pytest.mark.parametrize(("args", "words"), [
    (("frobnicate",), ("unknown task",)),
    (("verify", "--frobnicate"), ("unknown option",)),
    (("verify", "--kernel"), ("needs a value",)),
    (("verify", "--load=yes"), ("takes no value",)),
    (("inspect", "--module", "a", "--module", "b"), ("given twice",)),
    (("verify", "--suite", "../../etc"), ("not a suite name",)),
    (("verify", "--source", "/tmp", "--kdir", "/tmp", "--kernel", "6.1.176"),
     ("cannot be used with --source/--kdir",)),
    (("verify", "--source", "/tmp"), ("go together",)),
    (("matrix", "--format", "yaml"), ("--format",)),
    (("bench", "--variant", "fast"), ("--variant",)),
    (("bench", "--modes", "smcr,quic"), ("unknown benchmark mode",)),
    (("race", "--kernel", "6.1.176; rm -rf /"), ("not a kernel version",)),
])
def test_bad_input_is_one_line_before_any_work(args: tuple[str, ...], words: tuple[str, ...],
                                               tmp_path: Path) -> None:
    takes_cache = args[0] not in ("frobnicate", "matrix")
    refused(smcpatch(*args, "--cache", str(tmp_path)) if takes_cache else smcpatch(*args),
            *words)
    assert not (tmp_path / "debs").exists()


def test_help_is_help_everywhere_and_starts_nothing(tmp_path: Path) -> None:
    for args in (("-h",), ("--help",), ("bench", "-h"), ("verify", "--kernel", "x", "-h")):
        proc = smcpatch(*args, "--cache", str(tmp_path)) if len(args) > 1 else smcpatch(*args)
        assert proc.returncode == 0 and "usage: smcpatch" in proc.stdout, proc.stderr
    assert not any(tmp_path.iterdir())


# -- 4. forged and malformed reports -----------------------------------------------------------
@pytest.mark.malformed_documents("r.json")
def test_a_forged_report_is_judged_again(tmp_path: Path) -> None:
    """ok: true in a report whose after-module is vulnerable merges as NOT ok (exit 1)."""
    forged = _report("6.1.176", after=_module("vulnerable")).to_json()
    forged["ok"], forged["problems"] = True, []
    (tmp_path / "r.json").write_text(json.dumps({"schema": "smcpatch-report/1", "ok": True,
                                                 "targets": [forged]}))
    proc = smcpatch("report", "--merge", str(tmp_path))
    assert proc.returncode == 1 and "after-module verdict is vulnerable" in proc.stdout


@pytest.mark.parametrize("targets", [
    "not a list", [1], [{"version": 6}], [{"version": "6.1.176"}],
    [{"version": "a", "package_version": "b", "flavour": "amd64", "release": "r", "suite": "s",
      "after": {"verdict": "fixed"}}],
    [{"version": "a", "package_version": "b", "flavour": "amd64", "release": "r", "suite": "s",
      "ok": "yes"}],
])
@pytest.mark.malformed_documents("r.json")
def test_a_malformed_report_is_bad_input(tmp_path: Path, targets: object) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"schema": "smcpatch-report/1",
                                                 "targets": targets}))
    refused(smcpatch("report", "--merge", str(tmp_path)), "r.json")


def test_a_report_of_garbage_bytes_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_bytes(os.urandom(4096))
    refused(smcpatch("report", "--merge", str(tmp_path)), "r.json")


# -- 8. messages that leak or mislead ---------------------------------------------------------
def test_an_error_never_shows_a_files_bytes(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secrethash:19000:0:99999:7:::\n")
    line = refused(smcpatch("inspect", "--module", str(secret)), "not an ELF file")
    assert "root" not in line.replace(str(tmp_path), "") and "secret" not in line.replace(
        str(tmp_path), "")


def test_library_reads_refuse_what_the_cli_would(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a regular file"):
        files.read_input(Path("/dev/zero"), "kernel matrix", files.MB)
    with pytest.raises(InspectError, match="not a regular file"):
        elf.load_elf_bytes(Path("/dev/zero"))
