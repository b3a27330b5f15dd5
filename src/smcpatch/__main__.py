"""`python -m smcpatch`: the console script."""

from .cli import main

main()
