"""What each command does, one module per task (`smcpatch <task>` / `inv <task>`): resolve the
kernels, run the stages, return a typed result with its exit code. Nothing here prints: the
CLI (smcpatch.cli) renders results with smcpatch.outputs.terminal, and a library user may call
these with no rich at all (`plumbing.progress.QUIET`, the default display).
"""

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERNAL = 3  # a bug: never reachable from the command line by design
EXIT_WOULD_NOT_LOAD = 4  # inspect: a fixed module the named kernel would refuse
