"""pyperf benchmark of the inspect stage on one module.

    python bench/bench_inspect.py --module PATH [--dwarf-object smc_clc.o] -o out.json

Times inspect_module() (decompression, ELF parsing, relocation evidence and, when the module or
the --dwarf-object carries DWARF, the inlined-subroutine walk) and function_bodies() (the
kpatch-style normalization of every function).  Any pyperf option (--fast, --rigorous,
--processes, ...) can be added.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyperf  # type: ignore[import-untyped]

# This checkout's code, whatever `pip install -e` last pointed at (as bench_pipeline.py does).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from smcpatch.inspection import function_bodies, inspect_module  # noqa: E402


def _worker_args(cmd: list[str], args: argparse.Namespace) -> None:
    """Pass our own options on to pyperf's worker processes."""
    cmd.extend(("--module", args.module))
    if args.dwarf_object:
        cmd.extend(("--dwarf-object", args.dwarf_object))


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_worker_args)
    runner.argparser.add_argument("--module", required=True, help="smc.ko, .ko.xz, .ko.zst or .o")
    runner.argparser.add_argument(
        "--dwarf-object", default=None, help="DWARF-carrying smc_clc.o of the same build"
    )
    args = runner.parse_args()
    module = Path(args.module)
    dwarf = Path(args.dwarf_object) if args.dwarf_object else None
    runner.metadata["smcpatch_module"] = str(module)
    if not args.worker:  # fail early, once, with our own message
        info = inspect_module(module, dwarf)
        print(f"{module}: {info.evidence.verdict}", file=sys.stderr)
    runner.bench_func("inspect_module", inspect_module, module, dwarf)
    runner.bench_func("function_bodies", function_bodies, module)


if __name__ == "__main__":
    main()
