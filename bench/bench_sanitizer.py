"""The cost and the result of `race --sanitizer`: per checker, a cold build of the debug kernel
(wall and CPU seconds, objects, disk), its boot, one race run per variant, then the warm reuse
of the cached kernel. The figures go in docs/race.md ("Debug kernels: KCSAN and KASAN").

    python bench/bench_sanitizer.py [--kernel 6.12.107] [--sanitizer kcsan --sanitizer kasan]
        [--seconds 60] [--widen] [--cache DIR] [--cold] [-o results/bench-sanitizer.json]

--cold removes the checker's debug kernel (and, with --cold-source, the whole source tree) from
the cache first, so the build is measured from scratch; the verified modules and the downloaded
packages stay. CPU seconds (the children's user + system time) are the figure to compare on a
shared host; wall seconds follow the load (the uptime before and after each run is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's code, as the other benchmarks


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def du(path: Path) -> int:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else 0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def race(args: argparse.Namespace, checker: str, out: Path) -> dict[str, Any]:
    """One `smcpatch race --sanitizer` in a subprocess, timed; its JSON's figures."""
    command = [sys.executable, "-m", "smcpatch", "race", "--kernel", args.kernel, "--sanitizer",
               checker, "--seconds", str(args.seconds), "--json", str(out),
               "--cache", str(args.cache), *(["--widen"] if args.widen else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "120"}
    load_before, cpu, started = uptime(), children_cpu(), time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.monotonic() - started, children_cpu() - cpu
    (out.with_suffix(".log")).write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-3000:] + proc.stderr[-2000:])
    result: dict[str, Any] = {"command": " ".join(command), "exit": proc.returncode,
                              "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                              "uptime_before": load_before, "uptime_after": uptime()}
    if out.is_file():
        document = json.loads(out.read_text())
        debug = document.get("debug_kernel") or {}
        result["debug_kernel"] = {k: debug.get(k) for k in (
            "release", "from_cache", "build_seconds", "objects", "compiler",
            "kernel_make_args", "module_make_args", "boot_params", "run_params")}
        result["variants"] = [{k: run.get(k) for k in (
            "variant", "instrumented", "verdict", "outcome", "boot_s", "attempts", "seconds",
            "prfx_match_calls", "returns", "kcsan_counters", "reproduced", "splats",
            "boot_reports", "finding")} | {"report_groups": [
                {k: g[k] for k in ("kind", "functions", "scope", "count", "two_sided",
                                   "unknown_origin", "title")} for g in run["reports"]],
                "first_report": next((g["first"] for g in run["reports"]), [])}
            for run in document["variants"]]
        result["fixed_survived"] = document["fixed_survived"]
    return result


def warm_reuse(args: argparse.Namespace, checker: str) -> float:
    """Seconds to find the cached debug kernel again (what a warm run adds to the race)."""
    from smcpatch.guest import debugkernel
    from smcpatch.kernels.kconfig import KernelConfig
    from smcpatch.kernels.request import KernelRequest
    from smcpatch.pipeline import fetch
    from smcpatch.pipeline.prepare import prepare_one
    from smcpatch.plumbing.cache import Cache

    cache = Cache.open(args.cache)
    ws = prepare_one(cache, KernelRequest((args.kernel,), ("amd64",)), "bench").workspace
    assert ws is not None
    cc = KernelConfig.read(ws.kernel_config).compiler_command
    started = time.monotonic()
    debug = debugkernel.ensure(cache, ws.target, debugkernel.sanitizer(checker), cc,
                               lambda: fetch.full_source(cache, ws),
                               fetch.full_source_present(cache, ws.target))
    seconds = time.monotonic() - started
    assert debug.from_cache, "the debug kernel was built again: not a warm reuse"
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="6.12.107")
    parser.add_argument("--sanitizer", action="append", choices=("kcsan", "kasan"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--widen", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "smcpatch")
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--cold-source", action="store_true")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "results" /
                        "bench-sanitizer.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"kernel": args.kernel, "seconds": args.seconds,
                               "widen": args.widen, "cpus": os.cpu_count(), "checkers": {}}
    for checker in args.sanitizer or ["kcsan", "kasan"]:
        entries = list((args.cache / "debug-kernels").glob(f"*_{checker}"))
        if args.cold:
            for entry in entries:
                shutil.rmtree(entry)
        if args.cold_source:
            shutil.rmtree(args.cache / "kernel-source", ignore_errors=True)
        tag = f"{args.kernel}-{checker}{'-widen' if args.widen else ''}"
        run = race(args, checker, args.out.parent / f"race-{tag}.json")
        entries = list((args.cache / "debug-kernels").glob(f"*_{checker}"))
        run["disk_bytes"] = {"debug_kernel": sum(du(e) for e in entries),
                             "source_tree": du(args.cache / "kernel-source")}
        if run["exit"] in (0, 1) and entries:
            run["warm_reuse_s"] = round(warm_reuse(args, checker), 3)
        results["checkers"][checker] = run
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0 if all(r["exit"] == 0 for r in results["checkers"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
