"""Pipeline timings: cold per-kernel stage times, and the warm rerun of the whole matrix.

    python bench/bench_pipeline.py cold --kernel 6.1.176 [--cache DIR]   # empty cache: one run
    python bench/bench_pipeline.py warm -o warm.json [--cache DIR]        # pyperf, warm cache
    python bench/bench_pipeline.py matrix --parallel N [--seed-debs DIR]   # whole matrix, cold

`cold` starts from an empty cache (a fresh temp dir unless --cache is given) and prints the
download, extract, build (before, after) and inspect times of one `verify` run, plus which objects
the after-build recompiled. `warm` times a whole-matrix verify with nothing changed through pyperf
(several processes, median reported); the cache must already be warm (run `inv verify` once).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smcpatch.commands import verify as verify_cmd  # noqa: E402
from smcpatch.plumbing.cache import Cache  # noqa: E402
from smcpatch.stages import pipeline, targets  # noqa: E402
from smcpatch.stages.targets import load_matrix, select  # noqa: E402


def cold(kernel: str, cache_dir: str | None) -> None:
    root = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="smcpatch-cold-"))
    cache = Cache.open(root)
    target = select(load_matrix(), [kernel], "amd64")[0]
    started = time.monotonic()
    result = pipeline.verify_target(cache, target, pipeline.Options())
    wall = time.monotonic() - started
    figures = {
        "kernel": target.package_version,
        "ok": result.ok,
        "download_s": result.timings_detail.get("download"),
        "extract_s": result.timings_detail.get("extract"),
        "build_before_s": result.timings_detail.get("build_before"),
        "build_after_s": result.timings_detail.get("build_after"),
        "inspect_s": result.timings.get("inspect"),
        "total_s": round(wall, 1),
        "after_recompiled": result.recompiled_for_after,
        "cache": str(root),
    }
    print(json.dumps(figures, indent=1))


def matrix(parallel: int, seed_debs: str | None) -> None:
    """The whole default matrix from an empty cache, N targets at once; with --seed-debs the
    .debs are copied in first, so the figure is extraction + build + inspection only."""
    import shutil


    root = Path(tempfile.mkdtemp(prefix=f"smcpatch-matrix-p{parallel}-"))
    if seed_debs:
        shutil.copytree(seed_debs, root / "debs")
    cache = Cache.open(root)
    plan = [(t, None) for t in targets.resolve(cache, [], "amd64")]
    started = time.monotonic()
    reports = [rep for _, rep in verify_cmd.run_plan(cache, plan, pipeline.Options(),
                                                     parallel=parallel)]
    wall = time.monotonic() - started
    print(json.dumps({"parallel": parallel, "targets": len(reports),
                      "ok": all(r.ok for r in reports), "wall_s": round(wall, 1),
                      "per_target_s": [r.timings.get("total") for r in reports],
                      "cache": str(root)}, indent=1))
    shutil.rmtree(root, ignore_errors=True)


def warm_once(cache_dir: str | None) -> None:
    cache = Cache.open(Path(cache_dir) if cache_dir else None)
    for target in targets.resolve(cache, [], "amd64"):
        result = pipeline.verify_target(cache, target, pipeline.Options())
        if not result.ok or not result.from_cache.get("build"):
            raise SystemExit(f"{target.package_version}: not a warm, ok run: {result.problems}")


def warm(argv: list[str]) -> None:
    import pyperf

    runner_ = pyperf.Runner(add_cmdline_args=lambda cmd, args: cmd.extend(
        ["--cache", args.cache] if args.cache else []))
    runner_.argparser.add_argument("--cache")
    args = runner_.parse_args(argv)
    runner_.metadata["description"] = "inv verify over the default matrix, warm cache"
    runner_.bench_func("verify_matrix_warm", warm_once, args.cache)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "cold":
        parser = argparse.ArgumentParser()
        parser.add_argument("--kernel", default="6.1.176")
        parser.add_argument("--cache")
        args = parser.parse_args(sys.argv[2:])
        cold(args.kernel, args.cache)
    elif len(sys.argv) > 1 and sys.argv[1] == "matrix":
        parser = argparse.ArgumentParser()
        parser.add_argument("--parallel", type=int, default=1)
        parser.add_argument("--seed-debs")
        args = parser.parse_args(sys.argv[2:])
        matrix(args.parallel, args.seed_debs)
    elif len(sys.argv) > 1 and sys.argv[1] == "warm":
        sys.argv = [sys.argv[0], *sys.argv[2:]]
        warm(sys.argv[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
