"""What --vex with every format adds to a warm `scan`: the product model and the three writers,
on the rows of a scan's JSON report (the warm scan's results are these, read from its cache).

    python bench/bench_vex.py --scan r.json [--runs 7] [--out DIR]

Each run is a fresh process, so the writers' imports (cyclonedx-python-lib is the slowest) are
in the first write; the second write of the same process shows the writing alone. Prints the
median and range of each, in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"  # this checkout's code


def one_run(scan: Path, out: Path) -> dict[str, float]:
    sys.path.insert(0, str(SRC))
    from smcpatch.pipeline.scan import ScanRow

    images = json.loads(scan.read_text())["images"]
    rows = [ScanRow(**{k: v for k, v in i.items() if k != "purl"}) for i in images]
    started = time.perf_counter()
    from smcpatch.outputs import products, vex

    statements = products.from_scan(rows)
    modelled = time.perf_counter()
    output = vex.VexOutput(out / "v.json", tuple(vex.FORMATS))
    vex.write(output, statements)
    first = time.perf_counter()
    vex.write(output, statements)
    second = time.perf_counter()
    return {"statements": len(statements), "model": modelled - started,
            "first write (imports included)": first - modelled, "second write": second - first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=Path, required=True, help="a scan's --json report")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="where the documents go")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a worker
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-vex-"))
    if args.one:
        print(json.dumps(one_run(args.scan, out)))
        return
    runs = [json.loads(subprocess.run(
        [sys.executable, __file__, "--scan", str(args.scan), "--out", str(out), "--one"],
        capture_output=True, text=True, check=True).stdout) for _ in range(args.runs)]
    print(f"{runs[0]['statements']:.0f} statements, {args.runs} runs; documents in {out}")
    for name in ("model", "first write (imports included)", "second write"):
        times = [r[name] for r in runs]
        print(f"  {name}: median {statistics.median(times):.3f} s "
              f"({min(times):.3f}-{max(times):.3f})")


if __name__ == "__main__":
    main()
