"""smcpatch in a checkout: `inv --list`, `inv <task> --help`.

The same tasks as the installed `smcpatch` console script (smcpatch.cli: `inv verify ...` =
`smcpatch verify ...`, same options, same exit codes), plus the developer tasks `test` and `lint`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Collection, Context, Exit, task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # usable before `pip install -e .` too

from smcpatch import cli  # noqa: E402


@task(help={
    "quick": "only the unit tests (not tests/integration/: real Debian kernels, QEMU, apt)",
    "k": "only tests matching this pytest -k expression",
})
def test(c: Context, quick: bool = False, k: str | None = None) -> None:
    """Run the full pytest suite (unit tests, real-kernel integration tests, the QEMU smoke)."""
    args = [sys.executable, "-m", "pytest", "-ra"]
    if quick:  # the unit tests: everything outside tests/integration/
        args += ["tests", "--ignore=tests/integration"]
    if k:
        args += ["-k", k]
    result = c.run(" ".join(args), pty=False, warn=True)
    if result is None or result.exited:
        raise Exit(code=result.exited if result else 1)


@task
def lint(c: Context) -> None:
    """ruff and mypy --strict over the project (needs `pip install -e '.[dev]'`)."""
    for command in ("ruff check .", "mypy"):
        result = c.run(f"{sys.executable} -m {command}", warn=True)
        if result is None or result.exited:
            raise Exit(code=result.exited if result else 1)


ns = Collection(*cli.namespace.tasks.values(), test, lint)
