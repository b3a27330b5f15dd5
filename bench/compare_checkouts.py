"""Two checkouts of smcpatch, one command, alternating runs in one session: medians and the
new/old ratio (the machine is shared and noisy: alternating puts both under the same noise).

    python bench/compare_checkouts.py --old /path/old:/path/old/venv/bin/python \\
        --new .:python --runs 7 -- verify --cache {cache}
    python bench/compare_checkouts.py ... -- inspect --module M

Each checkout runs `python -m invoke -r CHECKOUT <args>`; `{cache}` becomes a cache of its own
per checkout, hard-linked from --seed-cache and warmed by one run first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(python: str, checkout: str, args: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([python, "-m", "invoke", "-r", checkout, *args], capture_output=True,
                          text=True, check=False)
    took = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{checkout}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="CHECKOUT:PYTHON")
    parser.add_argument("--new", required=True, help="CHECKOUT:PYTHON")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed-cache", type=Path, default=Path.home() / ".cache/smcpatch-tests")
    parser.add_argument("-o", "--out", type=Path)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    work = Path(tempfile.mkdtemp(prefix="smcpatch-compare-"))
    sides = {}
    try:
        for name, spec in (("old", opts.old), ("new", opts.new)):
            checkout, python = spec.split(":", 1)
            cache = work / name
            if any("{cache}" in a for a in args):
                # a seed in use may lose a temp file while it is copied: that one is not needed
                subprocess.run(["cp", "-al", str(opts.seed_cache), str(cache)], check=False,
                               capture_output=True)
            argv = [a.replace("{cache}", str(cache)) for a in args]
            run(python, checkout, argv)  # warm: each side's own cache entries made once
            sides[name] = (python, checkout, argv)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(opts.runs):
            for name, (python, checkout, argv) in sides.items():
                times[name].append(run(python, checkout, argv))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"args": args, "runs": opts.runs, "times_s": times, "median_s": medians,
              "ratio_new_old": round(medians["new"] / medians["old"], 3)}
    print(json.dumps(result, indent=1))
    if opts.out:
        opts.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
