"""A hostile pass over every command (issue 25's classes), counted by verdict.

    python bench/hostile_pass.py [--json results/hostile-pass.json]

Each case builds its own hostile input in a temporary directory (crafted modules compiled with
gcc, fake roots with Debian's real smc.ko from the test cache, forged reports), runs the real
console entry (`python -m smcpatch`) with a timeout, and is sorted into one verdict:

- refused: exit 2 with one line on stderr (bad input, said before any work);
- judged: exit 0, 1 or 4 with the answer the case expects;
- WRONG: another exit code than the case expects (a gate failing open is WRONG);
- FAIL: exit 3, a traceback, a raw control character or unescaped markup reaching the terminal,
  a hang (the timeout), or a file written where it must not be.

The process exits 1 when any case is WRONG or FAIL. Nothing is loaded into the host's kernel and
the host's /etc is never written (every root is a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from smcpatch.outputs import jsonreport  # noqa: E402
from tests.installed.machine import Machine  # noqa: E402
from tests.pipeline.test_report import _report  # noqa: E402
from tests.test_hostile_text import crafted_module  # noqa: E402

RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what a terminal must never get raw
TIMEOUT = 120


@dataclass
class Case:
    name: str
    klass: str  # the class
    expect: tuple[int, ...]  # the exit codes that are right for this input
    run: Callable[[Path], list[str] | tuple[list[str], dict[str, str]]]
    after: Callable[[Path, subprocess.CompletedProcess[str]], str | None] | None = None


@dataclass
class Outcome:
    name: str
    klass: str
    verdict: str
    exit_code: int | None
    seconds: float
    why: str = ""
    stderr: list[str] = field(default_factory=list)


def smcpatch(argv: list[str], env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "COLUMNS": "200", **(env or {})}
    environ.pop("SMCPATCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "smcpatch", *argv], cwd=cwd or ROOT,
                          env=environ, capture_output=True, text=True, errors="surrogateescape",
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)


# -- inputs ---------------------------------------------------------------------------------------
def machine_with(where: Path, conf: dict[str, bytes] | None = None,
                 version: str = "6.1.176-1") -> Machine:
    machine = Machine.make(where)
    machine.kernel(version)
    for path, data in (conf or {}).items():
        target = machine.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return machine


def host_conf(conf: dict[str, bytes]) -> Callable[[Path], list[str]]:
    def run(where: Path) -> list[str]:
        return ["host", "--root", str(machine_with(where, conf).root)]
    return run


def reports(where: Path, *kernels: tuple[str, str, bool]) -> Path:
    """A directory of verify reports: (file name, kernel, build failed)."""
    jobs = where / "jobs"
    jobs.mkdir()
    for name, kernel, failed in kernels:
        report = _report(kernel)
        if failed:
            report.error = "build failed: make exited 2"
        jsonreport.write_json(jobs / name, jsonreport.document([report]))
    return jobs


def forged_report(where: Path, edit: Callable[[str], str]) -> Path:
    jobs = reports(where, ("a.json", "6.1.176", False))
    path = jobs / "a.json"
    path.write_text(edit(path.read_text()))
    return jobs


def matrix_file(where: Path, version: str, package_version: str = "6.1.176-1") -> Path:
    path = where / "k.toml"
    path.write_text(f'[[kernel]]\nversion = "{version}"\npackage_version = "{package_version}"\n'
                    'abi = "6.1.0-50"\nseries = "6.1"\narch = "amd64"\n', encoding="utf-8",
                    errors="surrogateescape")
    return path


def module(where: Path, vermagic: bytes) -> str:
    return str(crafted_module(where, vermagic))


def loop_root(where: Path) -> list[str]:
    machine = machine_with(where)
    modprobe = machine.root / "etc/modprobe.d"
    for child in modprobe.iterdir():
        child.unlink()
    modprobe.rmdir()
    modprobe.symlink_to("/x")
    (machine.root / "x").symlink_to("/etc/modprobe.d")
    return ["host", "--root", str(machine.root), "--mitigate"]


def absolute_link_root(where: Path) -> list[str]:
    machine = machine_with(where)
    secret = where / "host-file"
    secret.write_text("smc\n")
    builtin = next((machine.root / "usr/lib/modules").iterdir()) / "modules.builtin"
    builtin.unlink(missing_ok=True)
    builtin.symlink_to(str(secret))  # read as ROOT/<that path>: absent there
    return ["host", "--root", str(machine.root)]


def fifo_module_root(where: Path) -> list[str]:
    machine = machine_with(where)
    found = next((machine.root / "usr/lib/modules").rglob("smc.ko*"))
    found.unlink()
    os.mkfifo(found)
    return ["host", "--root", str(machine.root)]


def sparse_module_root(where: Path) -> list[str]:
    machine = machine_with(where)
    found = next((machine.root / "usr/lib/modules").rglob("smc.ko*"))
    with open(found, "r+b") as handle:
        handle.truncate(7 * 1024 ** 3)
    return ["host", "--root", str(machine.root)]


def unmitigate_changed(where: Path) -> list[str]:
    machine = machine_with(where)
    done = smcpatch(["host", "--root", str(machine.root), "--mitigate"])
    assert done.returncode in (0, 1), done.stderr
    conf = next((machine.root / "etc/modprobe.d").glob("*smc*"))
    conf.write_text(conf.read_text() + "options smc_diag debug=1\n")
    return ["host", "--root", str(machine.root), "--unmitigate"]


def symlinked_json(where: Path) -> list[str]:
    machine = machine_with(where)
    target = where / "target"
    target.write_text("keep")
    (where / "l.json").symlink_to(target)
    return ["host", "--root", str(machine.root), "--json", str(where / "l.json")]


def untouched(name: str, content: str) -> Callable[[Path, subprocess.CompletedProcess[str]],
                                                     str | None]:
    def check(where: Path, _: subprocess.CompletedProcess[str]) -> str | None:
        path = where / name
        return None if path.read_text() == content else f"{name} was changed"
    return check


def no_file(name: str) -> Callable[[Path, subprocess.CompletedProcess[str]], str | None]:
    def check(where: Path, _: subprocess.CompletedProcess[str]) -> str | None:
        return f"{name} exists" if Path(name.replace("WHERE", str(where))).exists() else None
    return check


def not_outside(where: Path, _: subprocess.CompletedProcess[str]) -> str | None:
    return "written outside the root" if any(Path("/etc/modprobe.d").glob("*smcpatch*")) else None


def vex_nothing(where: Path) -> list[str]:
    machine = Machine.make(where)  # no dpkg-named kernel
    (machine.root / "usr/lib/modules/6.1.0-50-amd64").mkdir(parents=True)
    (where / "v.json").write_text("old")
    return ["host", "--root", str(machine.root), "--vex", str(where / "v.json")]


def big_patch(where: Path) -> list[str]:
    patches = where / "patches"
    patches.mkdir()
    with open(patches / "0001-x.patch", "wb") as handle:
        handle.truncate(3 * 1024 ** 3)
    (patches / "series").write_text("0001-x.patch\n")
    return ["verify", "--kernel", "6.1.176", "--patches", str(patches)]


def deep_report(where: Path) -> list[str]:
    jobs = where / "jobs"
    jobs.mkdir()
    (jobs / "a.json").write_text("[" * 200_000 + "]" * 200_000)
    return ["report", "--merge", str(jobs)]


def out_name(where: Path) -> list[str]:
    jobs = reports(where, ("a.json", "6.1.176", False))
    return ["report", "--merge", str(jobs), "--json", str(where / ("r" * 235 + ".json"))]


CASES = [
    # kmod's reading of modprobe.d: each is what kmod's own dry run does
    Case("install\\vsmc is a bad line: smc loads", "modprobe", (1,),
         host_conf({"/etc/modprobe.d/b.conf": b"install\vsmc /bin/false\n"})),
    Case("install<NBSP>smc is a bad line: smc loads", "modprobe", (1,),
         host_conf({"/etc/modprobe.d/b.conf": "install\u00a0smc /bin/false\n".encode()})),
    Case("bare `install smc` blocks nothing", "modprobe", (1,),
         host_conf({"/etc/modprobe.d/b.conf": b"install smc\n"})),
    Case("a block after 4.8 MB of comments holds", "modprobe", (0,),
         host_conf({"/etc/modprobe.d/big.conf": b"# pad\n" * 800_000
                    + b"install smc /bin/false\n"})),
    Case("the first of two install lines wins (blocked)", "modprobe", (0,),
         host_conf({"/etc/modprobe.d/a.conf": b"install smc /bin/false\n",
                    "/etc/modprobe.d/b.conf":
                    b"install smc /sbin/modprobe --ignore-install smc\n"})),
    Case("CRLF: the install command ends in a CR kmod keeps: loadable", "modprobe", (1,),
         host_conf({"/etc/modprobe.d/b.conf": b"install smc /bin/false\r\n"})),
    Case("a 70 MB modprobe.d file is refused", "modprobe", (2,),
         host_conf({"/etc/modprobe.d/huge.conf": b"#" * (70 * 1024 * 1024)})),
    # green only with evidence
    Case("an empty root is undecided", "evidence", (2,),
         lambda w: ["host", "--root", str((w / "empty").mkdir() or w / "empty")]),
    Case("a build failure is not hidden by a later pass", "evidence", (1,),
         lambda w: ["report", "--merge", str(reports(w, ("0.json", "6.1.176", True),
                                                     ("a.json", "6.1.176", False)))]),
    Case("host --vex with nothing to state: refused, old file kept", "evidence", (2,),
         vex_nothing, untouched("v.json", "old")),
    Case("--fail-on-vulnerable says why", "evidence", (1,),
         lambda w: ["report", "--merge", str(reports(w, ("a.json", "6.1.176", False))),
                    "--fail-on-vulnerable"]),
    # the root holds
    Case("a symlink loop in the root: refused, nothing written outside", "root", (2,),
         loop_root, not_outside),
    Case("an absolute link is read inside the root", "root", (1,), absolute_link_root),
    Case('--root ""', "root", (2,), lambda w: ["host", "--root", ""]),
    Case("a FIFO smc.ko under the root never hangs", "root", (1, 2), fifo_module_root),
    Case("a 7 GB sparse smc.ko under the root", "root", (2,), sparse_module_root),
    # text stays text
    Case("[/] in a path and markup in a vermagic", "text", (2,),
         lambda w: ["inspect", "--module",
                    module((w / "a[/]b").mkdir(parents=True) or w / "a[/]b",
                           b"6.1.0 [link=http://x]x[/link] \x1b[31m\x07")]),
    Case("a newline in a vermagic forges no line", "text", (2,),
         lambda w: ["inspect", "--module", module(w, b"6.1.0\nsmc.ko: fixed")]),
    Case("ESC/BEL in a root's directory name", "text", (0, 1),
         lambda w: ["host", "--root", str(machine_with(w / "r\x1b]0;x\x07").root)]),
    Case("a matrix version with shell syntax is quoted", "text", (0,),
         lambda w: ["matrix", "--matrix", str(matrix_file(w, "6.1.176; touch PWNED #"))]),
    Case("control characters in a matrix package_version", "text", (0, 2),
         lambda w: ["kernels", "--matrix", str(matrix_file(w, "6.1.176", "6.1\x1b[31m\x07"))]),
    Case("a non-ASCII vermagic under PYTHONIOENCODING=ascii", "text", (2,),
         lambda w: (["inspect", "--module", module(w, "6.1.0 é€".encode())],
                    {"PYTHONIOENCODING": "ascii"})),
    # what is not ours
    Case("host --json through a symlink: refused, target kept", "not ours", (2,),
         symlinked_json, untouched("target", "keep")),
    Case("--json s.json --vex s.json", "not ours", (2,),
         lambda w: ["host", "--root", str(machine_with(w).root), "--json", str(w / "s.json"),
                    "--vex", str(w / "s.json")]),
    Case("--vex /dev/stdout with two formats", "not ours", (2,),
         lambda w: ["host", "--root", str(machine_with(w).root), "--vex", "/dev/stdout",
                    "--vex-format", "csaf", "--vex-format", "openvex"],
         no_file("/dev/stdout.csaf.json")),
    Case("--unmitigate keeps an administrator's lines", "not ours", (2,), unmitigate_changed),
    # signals, exit codes, unbounded input
    Case("--json /dev/full", "exit codes", (2,),
         lambda w: ["report", "--merge", str(reports(w, ("a.json", "6.1.176", False))),
                    "--json", "/dev/full"]),
    Case('--json ""', "exit codes", (2,),
         lambda w: ["report", "--merge", str(reports(w, ("a.json", "6.1.176", False))),
                    "--json", ""]),
    Case("--json ~nosuchuser/x", "exit codes", (2,),
         lambda w: ["report", "--merge", str(reports(w, ("a.json", "6.1.176", False))),
                    "--json", "~nosuchuser/x"]),
    Case("--json /missing-dir/x.json creates nothing", "exit codes", (2,),
         lambda w: ["report", "--merge", str(reports(w, ("a.json", "6.1.176", False))),
                    "--json", "/smcpatch-missing-dir/x.json"],
         no_file("/smcpatch-missing-dir")),
    Case("--vex-namespace https://[::1", "exit codes", (2,),
         lambda w: ["host", "--root", str(machine_with(w).root), "--vex", str(w / "v.json"),
                    "--vex-namespace", "https://[::1"]),
    Case("a 240-character output name", "exit codes", (0,), out_name),
    Case("a 200,000-deep JSON array in a merge", "exit codes", (2,), deep_report),
    Case("NaN in a merged report's timings", "exit codes", (2,),
         lambda w: ["report", "--merge", str(forged_report(
             w, lambda t: t.replace('"timings": {', '"timings": {"fetch": NaN, ', 1)))]),
    Case("1e400 in a merged report", "exit codes", (2,),
         lambda w: ["report", "--merge", str(forged_report(
             w, lambda t: t.replace('"timings": {', '"timings": {"fetch": 1e400, ', 1)))]),
    Case("wrong element types in a merged report", "exit codes", (2,),
         lambda w: ["report", "--merge", str(forged_report(
             w, lambda t: t.replace('"notes": [', '"notes": [42, ', 1)))]),
    Case("inspect --symvers secret.env", "exit codes", (2,),
         lambda w: ((w / "secret.env").write_text("PASSWORD=hunter2\n") and None)
         or ["inspect", "--module", module(w, b"6.1.0"), "--symvers", str(w / "secret.env")]),
    Case("a 3 GB patch file", "unbounded", (2,), big_patch),
]


def judge(case: Case, where: Path) -> Outcome:
    started = time.monotonic()
    built = case.run(where)
    argv, env = built if isinstance(built, tuple) else (built, {})
    try:
        done = smcpatch(argv, env)
    except subprocess.TimeoutExpired:
        return Outcome(case.name, case.klass, "FAIL", None, time.monotonic() - started,
                       f"no answer in {TIMEOUT} s")
    seconds = time.monotonic() - started
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    out = Outcome(case.name, case.klass, "", done.returncode, seconds, stderr=lines[-3:])
    text = done.stdout + done.stderr
    problem = ("exit 3" if done.returncode == 3 else
               "traceback" if "Traceback" in text or "internal error" in text else
               "raw control character" if RAW.search(text) else
               "PWNED" if Path("PWNED").exists() else None)
    if problem is None and case.after is not None:
        problem = case.after(where, done)
    if problem:
        out.verdict, out.why = "FAIL", problem
    elif done.returncode not in case.expect:
        out.verdict, out.why = "WRONG", f"exit {done.returncode}, expected {case.expect}"
    elif done.returncode == 2 and done.stdout.strip() and not lines:
        out.verdict = "judged"  # an answer: undecided (inspect's exit 2), said on stdout
    elif done.returncode == 2:
        out.verdict = "refused" if len(lines) == 1 else "FAIL"
        out.why = "" if len(lines) == 1 else f"{len(lines)} lines on stderr"
    else:
        out.verdict = "judged"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    outcomes = []
    for case in CASES:
        if args.k not in case.name:
            continue
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
            outcome = judge(case, Path(tmp))
        outcomes.append(outcome)
        print(f"{outcome.verdict:8} exit {outcome.exit_code!s:4} {outcome.seconds:5.1f} s  "
              f"[{case.klass}] {case.name}" + (f": {outcome.why}" if outcome.why else ""))
    counts = Counter(o.verdict for o in outcomes)
    print(", ".join(f"{n} {v}" for v, n in sorted(counts.items())), f"of {len(outcomes)} cases")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"counts": counts, "cases": [asdict(o) for o in outcomes]},
                                        indent=1, ensure_ascii=True))
    return 1 if counts["WRONG"] or counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
