"""The README's two commands on a fresh machine: a clean bookworm chroot with Python, nothing else.

    sudo python bench/fresh_machine.py [--kernel 6.1.176] [--skip-tests] [-k EXPR] [--keep] [--load]

Makes a minimal bookworm chroot with mmdebstrap from the host's own mirrors (python3, pip and venv:
Debian's system Python refuses `pip install` outside a venv, PEP 668, so the commands run in an
activated venv, as the README says), clones this checkout's committed HEAD into it, and runs the
README's Quick start commands exactly as written there, the main job with `--kernel K` appended (one
vulnerable kernel, to keep it short). It records how long each took and which Debian packages the
run installed, and writes results/fresh-machine.json. With --load, a load generator (stress-ng:
every core, 1 GiB of memory, the disk) runs the whole time: the machine is busy, as CI's may be.
Not part of CI: it takes a while.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smcpatch.kernels import chroot  # noqa: E402
from smcpatch.plumbing import hostpkg  # noqa: E402
from smcpatch.plumbing.apt import host_sources, mirror_lines  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from loadgen import load_generator  # noqa: E402

SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")

# Runs as: unshare -m bash -c ENTER fresh ROOT COMMAND: a private mount namespace, so nothing stays
# mounted afterwards; /proc, /sys and /dev as a machine has them.
ENTER = r"""
set -eu
root=$1; shift
mount --bind "$root" "$root"  # the chroot's / a mount point, as a machine's is (unshare needs it)
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
exec chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt bash -c "$1"
"""


def quick_start_commands(readme: Path) -> tuple[str, str]:
    """The two indented commands of the README's Quick start section, as written."""
    text = readme.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in section.splitlines()
                if line.startswith("    ") and "pip install" in line]
    if len(commands) != 2:
        raise SystemExit(f"README Quick start: expected two `pip install ...` commands, "
                         f"found {commands}")
    return commands[0], commands[1]


def make_chroot(root: Path, log: Path) -> float:
    hostpkg.ensure(chroot.TOOLS, "tools for the fresh-machine chroot")
    started = time.monotonic()
    args = ["mmdebstrap", "--variant=apt", "--mode=root",
            '--aptopt=Acquire::Check-Valid-Until "false"', f"--include={','.join(PACKAGES)}",
            "bookworm", str(root), *mirror_lines(host_sources(), SUITES)]
    with open(log, "w") as handle:
        subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - started


def trust_host_cas(root: Path) -> None:
    """The machine's own local certificate authorities (its network may re-sign TLS): part of
    the machine a user has, not of what the project installs."""
    local = Path("/usr/local/share/ca-certificates")
    if not local.is_dir():
        return
    shutil.copytree(local, root / local.relative_to("/"), dirs_exist_ok=True)
    code, _ = in_chroot(root, "update-ca-certificates >/dev/null", root / "tmp/ca.log")
    if code:
        raise SystemExit("update-ca-certificates failed in the chroot")


def in_chroot(root: Path, script: str, log: Path) -> tuple[int, float]:
    started = time.monotonic()
    with open(log, "w") as handle:
        code = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                               ENTER, "fresh", str(root), script], stdout=handle,
                              stderr=subprocess.STDOUT, check=False,
                              # as from a terminal, even when this script runs in the background
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
                              ).returncode
    return code, time.monotonic() - started


def installed_packages(root: Path) -> set[str]:
    proc = subprocess.run(["dpkg-query", "--admindir", str(root / "var/lib/dpkg"), "-W",
                           "-f", "${Package}\\n"], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


def last_lines(log: Path, n: int = 6) -> list[str]:
    return log.read_text(errors="replace").strip().splitlines()[-n:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="6.1.176", help="the main job's one kernel")
    parser.add_argument("--skip-tests", action="store_true", help="only the main job")
    parser.add_argument("--keep", action="store_true", help="keep the chroot afterwards")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "fresh-machine")
    parser.add_argument("-k", dest="tests_k", metavar="EXPR",
                        help="only the tests matching this pytest -k expression (the test "
                             "command with `-k EXPR` appended): to recheck one test file")
    parser.add_argument("--load", action="store_true",
                        help="keep a load generator (stress-ng) running the whole time")
    args = parser.parse_args()
    main_job, test_job = quick_start_commands(ROOT / "README.md")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="smcpatch-fresh-", dir="/var/tmp"))
    root = work / "root"
    result: dict[str, object] = {"kernel": args.kernel, "main_command": main_job,
                                 "test_command": test_job}
    busy = load_generator(work / "stress") if args.load else contextlib.nullcontext([])
    try:
        result["load_generator"] = " ".join(busy.__enter__()) or None
        result["chroot_seconds"] = round(make_chroot(root, args.out / "mmdebstrap.log"), 1)
        subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(root / "root/smcpatch")],
                       check=True)
        trust_host_cas(root)
        before = installed_packages(root)
        venv = "python3 -m venv /root/venv && . /root/venv/bin/activate && cd /root/smcpatch"
        code, seconds = in_chroot(root, f"{venv} && {main_job} --kernel {args.kernel}",
                                  args.out / "main.log")
        after = installed_packages(root)
        result["main"] = {"exit": code, "seconds": round(seconds, 1),
                          "installed": sorted(after - before),
                          "tail": last_lines(args.out / "main.log")}
        print(f"main job: exit {code} in {seconds:.0f} s; installed "
              f"{', '.join(sorted(after - before)) or 'nothing'}")
        if not args.skip_tests:
            only = f" -k {shlex.quote(args.tests_k)}" if args.tests_k else ""
            code, seconds = in_chroot(root, f"{venv} && {test_job}{only}", args.out / "tests.log")
            summary = [ln for ln in last_lines(args.out / "tests.log", 40)
                       if re.search(r"\d+ (passed|failed)", ln)]
            result["tests"] = {"exit": code, "seconds": round(seconds, 1),
                               "summary": summary[-1:] or last_lines(args.out / "tests.log")}
            print(f"test suite: exit {code} in {seconds:.0f} s: {summary[-1:] or '?'}")
    finally:
        busy.__exit__(None, None, None)
        (args.out / "fresh-machine.json").write_text(json.dumps(result, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"results: {args.out / 'fresh-machine.json'} (logs beside it)")
    ok = result.get("main", {}).get("exit") == 0  # type: ignore[union-attr]
    tests_ok = args.skip_tests or result.get("tests", {}).get("exit") == 0  # type: ignore[union-attr]
    return 0 if ok and tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
