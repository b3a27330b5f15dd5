"""Pipeline timings: cold per-kernel stage times, and the warm rerun of the whole matrix.

    python bench/bench_pipeline.py cold --kernel 6.1.176 [--cache DIR]   # empty cache: one run
    python bench/bench_pipeline.py warm -o warm.json [--cache DIR]        # pyperf, warm cache
    python bench/bench_pipeline.py matrix --parallel N [--seed-debs DIR]   # whole matrix, cold
    python bench/bench_pipeline.py arches --kernel 6.1.176 [--warm-runs 5] [--load]

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

from smcpatch.kernels import targets  # noqa: E402
from smcpatch.kernels.resolve import KernelRequest, resolve  # noqa: E402
from smcpatch.pipeline import prepare as pipeline  # noqa: E402
from smcpatch.plumbing.cache import Cache  # noqa: E402


def cold(kernel: str, cache_dir: str | None) -> None:
    root = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="smcpatch-cold-"))
    cache = Cache.open(root)
    [target] = resolve(cache, KernelRequest(kernels=(kernel,)))
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
    plan = resolve(cache, KernelRequest())
    started = time.monotonic()
    reports = [p.report for p in pipeline.prepare(cache, plan, pipeline.Options(),
                                                  parallel=parallel)]
    wall = time.monotonic() - started
    print(json.dumps({"parallel": parallel, "targets": len(reports),
                      "ok": all(r.ok for r in reports), "wall_s": round(wall, 1),
                      "per_target_s": [r.timings.get("total") for r in reports],
                      "cache": str(root)}, indent=1))
    shutil.rmtree(root, ignore_errors=True)


def arches(kernel: str, warm_runs: int, load: bool) -> None:
    """One kernel on amd64, arm64 and s390x in one run, serially from one empty cache: the cold
    stage times (download, extract, before/after builds), the median of warm reruns, and with
    --load the guest boot + insmod of each after-module; ratios against the native amd64."""
    import shutil
    import statistics

    from smcpatch.guest import loadcheck

    root = Path(tempfile.mkdtemp(prefix="smcpatch-arches-"))
    cache = Cache.open(root)
    rows = {}
    for arch in targets.ARCHES:
        [target] = resolve(cache, KernelRequest(kernels=(kernel,), arches=(arch,)))
        started = time.monotonic()
        [ws] = pipeline.install_host_tools([pipeline.fetch_target(cache, target)])
        cold = pipeline.run_stages(cache, ws, pipeline.Options()).report
        cold_s = time.monotonic() - started
        warm = []
        for _ in range(warm_runs):
            started = time.monotonic()
            again = pipeline.verify_target(cache, target, pipeline.Options())
            warm.append(time.monotonic() - started)
            assert again.ok and again.from_cache.get("build"), again.problems
        row = {"ok": cold.ok, "cold_s": round(cold_s, 1),
               "download_s": cold.timings_detail.get("download"),
               "extract_s": cold.timings_detail.get("extract"),
               "build_before_s": cold.timings_detail.get("build_before"),
               "build_after_s": cold.timings_detail.get("build_after"),
               "warm_median_s": round(statistics.median(warm), 3),
               "downloaded_mb": round((ws.workspace.downloaded_bytes if ws.workspace else 0)
                                      / 1e6, 1)}
        if load and ws.workspace is not None and ws.workspace.image_deb and cold.after:
            started = time.monotonic()
            result = loadcheck.load_check(cache, arch, ws.workspace.image_deb,
                                          Path(cold.after.path))
            row["load_s"] = round(time.monotonic() - started, 1)
            row["loaded"] = result.loaded
        rows[arch] = row
    base = rows[targets.HOST_ARCH]
    for row in rows.values():
        builds = (row["build_before_s"] or 0) + (row["build_after_s"] or 0)
        native = (base["build_before_s"] or 0) + (base["build_after_s"] or 0)
        row["build_ratio_vs_amd64"] = round(builds / native, 2) if native else None
        row["warm_ratio_vs_amd64"] = round(row["warm_median_s"] / base["warm_median_s"], 2)
    print(json.dumps({"kernel": kernel, "arches": rows, "cache": str(root)}, indent=1))
    shutil.rmtree(root, ignore_errors=True)


def warm_once(cache_dir: str | None) -> None:
    cache = Cache.open(Path(cache_dir) if cache_dir else None)
    for target in resolve(cache, KernelRequest()):
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
    elif len(sys.argv) > 1 and sys.argv[1] == "arches":
        parser = argparse.ArgumentParser()
        parser.add_argument("--kernel", default="6.1.176")
        parser.add_argument("--warm-runs", type=int, default=5)
        parser.add_argument("--load", action="store_true")
        args = parser.parse_args(sys.argv[2:])
        arches(args.kernel, args.warm_runs, args.load)
    elif len(sys.argv) > 1 and sys.argv[1] == "warm":
        sys.argv = [sys.argv[0], *sys.argv[2:]]
        warm(sys.argv[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
