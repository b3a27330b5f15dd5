"""smcpatch in a checkout: `inv --list`, `inv <task> --help`.

The same tasks as the installed `smcpatch` console script (smcpatch.cli: `inv verify ...` =
`smcpatch verify ...`, same options, same exit codes), plus the developer tasks `test` and `lint`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # usable before `pip install -e .` too

# first, when invoke's program runs this file (`inv`, `python -m invoke`; not when a test imports
# it): signals and standard streams made safe, a SIGTERM or Ctrl-C from here on a quiet exit,
# never a traceback, before anything heavy is imported
from smcpatch.__main__ import start  # noqa: E402

RUN_BY_INVOKE = (Path(sys.argv[0]).name in ("inv", "invoke")
                 or Path(sys.argv[0]).parent.name == "invoke")
if RUN_BY_INVOKE:
    start()

from invoke import Collection, Context, Exit, task  # noqa: E402

from smcpatch import cli  # noqa: E402
from smcpatch.outputs.text import set_front_end  # noqa: E402

if RUN_BY_INVOKE:  # every command printed for the user to run names `inv`, the program in use
    set_front_end("inv")
from smcpatch.plumbing import proc  # noqa: E402


def _unknown_options_exit_2() -> None:
    """`inv` is invoke's program: its parser says "No idea what '--x' is!" and exits 1, the code
    smcpatch keeps for "not fixed". Bad input is one `error:` line and exit 2 here as in the
    `smcpatch` console script (whose parser is our own). invoke loads this file before it parses
    the tasks' options, so its task parsing is wrapped from here."""
    from invoke.exceptions import ParseError
    from invoke.program import Program

    parse_tasks = Program.parse_tasks

    def parse_tasks_or_exit_2(self: Program) -> None:
        try:
            parse_tasks(self)
        except ParseError as error:
            raise Exit(f"error: {error} (inv <task> --help)", code=2) from None

    Program.parse_tasks = parse_tasks_or_exit_2  # type: ignore[method-assign]


_unknown_options_exit_2()


def _signals_exit_130_143() -> None:
    """invoke turns a KeyboardInterrupt that reaches it into exit 1 (and SIGTERM, which the
    tasks' error edge raises as Terminated, too). A task reports its own interrupt in one line
    (cli.reported_errors); one that arrives outside it (invoke's own work before or after the
    task) ends the run quietly with the shell's code: 143 for SIGTERM, 130 for Ctrl-C."""
    from invoke.program import Program

    execute = Program.execute

    def execute_in_edge(self: Program) -> None:
        proc.handle_signals()
        try:
            execute(self)
        except Exception as exc:
            interrupt = proc.interrupt_behind(exc)
            if interrupt is None:
                raise
            proc.ignore_signals()
            proc.kill_all(stopping=True)
            raise Exit(code=proc.exit_code(interrupt)) from None
        except KeyboardInterrupt as exc:
            proc.ignore_signals()
            proc.kill_all(stopping=True)
            raise Exit(code=proc.exit_code(exc)) from None

    Program.execute = execute_in_edge  # type: ignore[method-assign]


_signals_exit_130_143()


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
    result = c.run(shlex.join(args), pty=False, warn=True)  # -k "a or b": one word
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
