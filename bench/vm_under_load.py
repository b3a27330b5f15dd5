"""The VM tests (tests/integration/test_vm.py: the real kernel booted under QEMU TCG, the
benchmark's proofs, the hang and panic paths, the regression gate) run twice under a CPU,
memory and I/O load generator (stress-ng), each time in a fresh pytest, and the outcome and time
of each recorded. The figures go in docs/performance.md.

    python bench/vm_under_load.py [--runs 2] [-o results/vm-under-load.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from loadgen import ROOT, load_generator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "results" / "vm-under-load.json")
    args = parser.parse_args()
    runs = []
    with load_generator(ROOT / "results" / "stress") as command:
        time.sleep(5)  # the load is up before the first boot
        for n in range(args.runs):
            started = time.monotonic()
            basetemp = args.out.parent / f"vm-under-load-run{n + 1}"
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "-rA", f"--basetemp={basetemp}",
                                   "tests/integration/test_vm.py"], cwd=ROOT,
                                  capture_output=True, text=True, check=False)
            # the whole output and the guests' consoles stay beside the figures
            (args.out.parent / f"vm-under-load-run{n + 1}.log").write_text(proc.stdout
                                                                          + proc.stderr)
            summary = [ln for ln in proc.stdout.splitlines()
                       if re.search(r"\d+ (passed|failed)", ln)]
            runs.append({"run": n + 1, "exit": proc.returncode,
                         "seconds": round(time.monotonic() - started, 1),
                         "summary": summary[-1:] or proc.stdout.splitlines()[-5:],
                         "failures": [ln for ln in proc.stdout.splitlines()
                                      if ln.startswith("FAILED")]})
            print(f"run {n + 1}: exit {proc.returncode} in {runs[-1]['seconds']} s: "
                  f"{runs[-1]['summary']}")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_generator": " ".join(command), "runs": runs,
                                    "uptime_after": load}, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
