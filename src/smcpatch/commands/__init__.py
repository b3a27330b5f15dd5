"""What each command does, one module per task (`smcpatch <task>` / `inv <task>`): resolve the
kernels, run the stages, return a typed result with its exit code. Nothing here prints: the
CLI (smcpatch.cli) renders results with smcpatch.outputs.terminal, and a library user may call
these with no rich at all (`plumbing.progress.QUIET`, the default display).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipeline.report import TargetReport

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERNAL = 3  # a bug: never reachable from the command line by design
EXIT_WOULD_NOT_LOAD = 4  # inspect: a fixed module the named kernel would refuse


def exit_code(reports: list[TargetReport], fail_on_vulnerable: bool = False) -> int:
    """0 when our fix is verified for every target; with fail_on_vulnerable, also only when
    Debian's own module of every target is fixed (what machines run)."""
    if not reports or not all(r.ok for r in reports):
        return EXIT_FAIL
    if fail_on_vulnerable and any(r.shipped_state != "fixed" for r in reports):
        return EXIT_FAIL
    return EXIT_OK


def red_reasons(reports: list[TargetReport], fail_on_vulnerable: bool = False,
                errors_said: bool = False) -> list[str]:
    """Why exit_code is not 0, one phrase per cause, naming the kernels (empty when it is 0).
    errors_said: a target that stopped on an error is left out (its error line said why)."""
    def names(group: list[TargetReport]) -> str:
        return ", ".join(f"{r.package_version} {r.flavour}" for r in group)

    if not reports:
        return ["no kernel was judged"]
    why = []
    unverified = [r for r in reports if not r.ok and not (errors_said and r.error)]
    if unverified:
        why.append(f"our fix is not verified for {names(unverified)}")
    if fail_on_vulnerable:
        by_state: dict[str, list[TargetReport]] = {}
        for r in reports:
            if r.shipped_state != "fixed":
                by_state.setdefault(r.shipped_state, []).append(r)
        for state, group in by_state.items():
            why.append(f"--fail-on-vulnerable: the shipped module is {state} in {names(group)}")
    return why
