"""What a run writes, tried as a hostile user would (issue 25): the one output writer for every
command (no write through a symlink, no two outputs on one file however spelled, derived names
only for regular paths, out of space in one line with the old file kept), report --merge that
never drops a report and refuses what is not JSON, a red exit that says why, and a symvers file
whose content is never shown. Each case is one line and exit 2 before any work, or done right."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smcpatch.errors import InspectError
from smcpatch.inspection import modcheck
from smcpatch.outputs import jsonreport
from tests.elfobjs import require_tool
from tests.pipeline.test_report import _report
from tests.test_hostile import refused, smcpatch


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    """A directory of one well-formed verify report: 6.1.176 verified, Debian's vulnerable."""
    directory = tmp_path / "jobs"
    directory.mkdir()
    jsonreport.write_json(directory / "a.json", jsonreport.document([_report("6.1.176")]))
    return directory


def _merge(jobs: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return smcpatch("report", "--merge", str(jobs), *args, **({"cwd": cwd} if cwd else {}))


# -- no write through a symlink, for every command that writes --------------------------------
@pytest.mark.parametrize("command", [
    ("report", "--merge", "JOBS", "--json"),
    ("verify", "--kernel", "6.1.176", "--json"),
    ("verify", "--kernel", "6.1.176", "--vex"),
    ("verify", "--kernel", "6.1.176", "--junit"),
    ("scan", "--json"),
    ("scan", "--vex"),
    ("race", "--json"),
    ("bench", "--junit"),
    ("host", "--json"),
    ("host", "--vex"),
])
def test_no_command_writes_through_a_symlink(tmp_path: Path, jobs: Path,
                                             command: tuple[str, ...]) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("theirs")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    args = [str(jobs) if word == "JOBS" else word for word in command]
    refused(smcpatch(*args, str(link), "--cache", str(tmp_path / "cache"))
            if command[0] not in ("report", "host") else smcpatch(*args, str(link)),
            "symbolic link")
    assert target.read_text() == "theirs" and link.is_symlink()
    assert not (tmp_path / "cache").exists()  # refused before any work


# -- no two outputs on one file, however spelled ------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "dot", "symlinked-dir", "hardlink", "derived",
                                      "stdout"])
def test_two_outputs_on_one_file_are_refused_before_any_work(tmp_path: Path,
                                                             spelling: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "d")
    (tmp_path / "d" / "h.json").write_text("x")
    os.link(tmp_path / "d" / "h.json", tmp_path / "d" / "h2.json")
    first, second, extra = {
        "same": ("d/s.json", "d/s.json", []),
        "dot": ("d/s.json", "./d/s.json", []),
        "symlinked-dir": ("d/s.json", "alias/s.json", []),
        "hardlink": ("d/h.json", "d/h2.json", []),
        "derived": ("d/x.csaf.json", "d/x.json", ["--vex-format", "csaf", "--vex-format",
                                                  "openvex"]),
        "stdout": ("/dev/stdout", "/dev/fd/1", []),
    }[spelling]
    proc = smcpatch("verify", "--kernel", "6.1.176", "--json", first, "--vex", second, *extra,
                    "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    refused(proc, "the same file")
    assert not (tmp_path / "cache").exists()
    assert (tmp_path / "d" / "h.json").read_text() == "x"


def test_several_vex_formats_never_name_files_beside_a_device(tmp_path: Path) -> None:
    for path in ("/dev/stdout", "/dev/null", "/dev/smcpatch-new.json"):
        refused(smcpatch("host", "--root", str(tmp_path), "--vex", path, "--vex-format", "csaf",
                         "--vex-format", "openvex"), "not into a device or pipe")
    assert not Path("/dev/stdout.csaf.json").exists()
    assert not Path("/dev/smcpatch-new.csaf.json").exists()


# -- names that cannot be, refused before the work -----------------------------------------------
@pytest.mark.parametrize("name, words", [
    ("", ("--json", "empty")),
    ("~nosuchuser-smcpatch/x.json", ("no such user",)),
    ("/missing-dir-smcpatch/x.json", ("no directory /missing-dir-smcpatch",)),
    ("x" * 300 + ".json", ("--json",)),
])
def test_an_output_name_that_cannot_be_is_one_line(jobs: Path, name: str,
                                                   words: tuple[str, ...]) -> None:
    refused(_merge(jobs, "--json", name), *words)
    assert not Path("/missing-dir-smcpatch").exists()


def test_a_240_character_output_name_is_written(tmp_path: Path, jobs: Path) -> None:
    path = tmp_path / ("r" * 240 + ".json")  # its temp name would pass 255 bytes uncut
    assert _merge(jobs, "--json", str(path)).returncode == 0
    assert json.loads(path.read_text())["schema"] == "smcpatch-report/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["jobs", path.name])


def test_merged_json_cannot_replace_one_of_its_inputs(jobs: Path) -> None:
    before = (jobs / "a.json").read_text()
    refused(_merge(jobs, "--json", str(jobs / "a.json")), "one of the reports merged")
    assert (jobs / "a.json").read_text() == before


# -- out of space: exit 2, one line, the old file intact -----------------------------------------
def test_json_to_dev_full_is_one_line(jobs: Path) -> None:
    refused(_merge(jobs, "--json", "/dev/full"), "no space left on device")


def test_stdout_to_dev_full_is_one_line(jobs: Path) -> None:
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("SMCPATCH_DEBUG", None)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "smcpatch", "report", "--merge",
                               str(jobs)], stdout=full, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0], lines


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a private mount namespace needs root and unshare")
def test_a_full_filesystem_keeps_the_old_file(tmp_path: Path, jobs: Path) -> None:
    require_tool("unshare", "util-linux")
    require_tool("mount", "mount")  # a fresh machine has neither
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=12k tmpfs {mnt} && echo old > {mnt}/r.json && "
              f"head -c 8000 /dev/zero > {mnt}/fill && "
              f"{sys.executable} -m smcpatch report --merge {jobs} --json {mnt}/r.json "
              f">/dev/null; echo rc=$?; cat {mnt}/r.json; ls -A {mnt}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stdout.split() == ["rc=2", "old", "fill", "r.json"], (proc.stdout, proc.stderr)
    assert "no space left on device (the file there before is kept)" in proc.stderr


# -- report --merge never drops a report ---------------------------------------------------------
def test_a_failure_in_one_report_is_not_hidden_by_a_later_pass(jobs: Path) -> None:
    failed = _report("6.1.176", error="make failed")
    jsonreport.write_json(jobs / "0.json", jsonreport.document([failed]))
    proc = _merge(jobs, "--json", str(jobs.parent / "m.json"))
    assert proc.returncode == 1, proc.stdout
    assert "exit 1: our fix is not verified for 6.1.176-1 amd64" in proc.stderr
    merged = json.loads((jobs.parent / "m.json").read_text())
    [target] = merged["targets"]
    assert target["error"] == "make failed" and merged["ok"] is False
    assert any("0.json, a.json" in note for note in target["notes"])


@pytest.mark.parametrize("forge, words", [
    (lambda text: text.replace('"timings": {}', '"timings": {"x": NaN}', 1), ("NaN",)),
    (lambda text: text.replace('"timings": {}', '"timings": {"x": 1e400}', 1), ("1e400",)),
    (lambda text: "[" * 200_000 + "]" * 200_000, ("nested too deeply",)),
    (lambda text: text.replace('"notes": []', '"notes": [1, {}]', 1), ("notes", "element")),
    (lambda text: text.replace('"sibling_verdicts": []', '"sibling_verdicts": [{"fix": "x"}]',
                               1), ("sibling_verdicts",)),
    (lambda text: text.replace('"timings": {}', '"timings": {"x": "slow"}', 1), ("timings",)),
])
@pytest.mark.malformed_documents("bad.json")
def test_a_merged_report_that_is_not_json_of_ours_is_refused(jobs: Path, forge: object,
                                                             words: tuple[str, ...]) -> None:
    text = (jobs / "a.json").read_text()
    forged = forge(text)  # type: ignore[operator]
    assert forged != text
    (jobs / "bad.json").write_text(forged)
    refused(_merge(jobs), "bad.json", *words)


def test_nan_is_never_written() -> None:
    with pytest.raises(ValueError):
        jsonreport.write_json(Path("/dev/null"), {"x": float("nan")})


# -- a red exit says why -------------------------------------------------------------------------
def test_fail_on_vulnerable_names_the_kernels(jobs: Path) -> None:
    green = _merge(jobs)
    assert green.returncode == 0 and "exit" not in green.stderr
    red = _merge(jobs, "--fail-on-vulnerable")
    assert red.returncode == 1
    lines = [ln for ln in red.stderr.splitlines() if ln.strip()]
    assert lines == ["exit 1: --fail-on-vulnerable: the shipped module is vulnerable in "
                     "6.1.176-1 amd64"]


# -- a symvers file's content is never shown -----------------------------------------------------
def test_an_unparsable_symvers_never_shows_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "secret.env"
    secret.write_text("API_TOKEN=hunter2-very-secret\n")
    with pytest.raises(InspectError) as caught:
        modcheck.read_module_symvers(secret)
    assert "hunter2" not in str(caught.value) and "API_TOKEN" not in str(caught.value)
    assert "secret.env:1" in str(caught.value)
    secret.write_text("zzz-token\tsymbol\tmodule\n")
    with pytest.raises(InspectError) as caught:
        modcheck.read_module_symvers(secret)
    assert "zzz-token" not in str(caught.value)


# -- never a stale file under an announced name -------------------------------------------------
def test_vex_with_nothing_to_state_removes_the_earlier_file(tmp_path: Path) -> None:
    from smcpatch.errors import NothingToState
    from smcpatch.outputs import vex

    output = vex.check_output(vex.VexOutput(tmp_path / "v.json", ("openvex", "csaf")))
    for path in output.paths().values():
        path.write_text("an earlier run's green VEX")
    with pytest.raises(NothingToState, match="removed"):
        vex.write(output, [])
    assert not any(path.exists() for path in output.paths().values())


@pytest.mark.parametrize("namespace", ["https://[::1", "https://[x]/", "http://", "ftp://a.b"])
def test_a_namespace_urlsplit_refuses_is_one_line(namespace: str) -> None:
    from smcpatch.errors import BadInput
    from smcpatch.outputs.vex import check_publisher

    with pytest.raises(BadInput, match="--vex-namespace"):
        check_publisher(None, namespace)
