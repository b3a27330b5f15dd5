"""Small smc_clc.c files for tests that need no download, made from our own patch at run time.

The repository carries no kernel code: the vulnerable text is the pre-image of the hunk in
patches/0001-smc-clc-prfx-match-rcu.patch, the fixed text its post-image, framed by a few lines
of our own so that line-offset handling is exercised too.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from smcpatch.data import DEFAULT_PATCHES

PATCH = DEFAULT_PATCHES / "0001-smc-clc-prfx-match-rcu.patch"
HEADER = "// test file generated from {patch}: not kernel code\n\n/* padding */\n\n"
FOOTER = "\n/* end of the test file */\n"


def _images(patch: Path) -> tuple[str, str]:
    before: list[str] = []
    after: list[str] = []
    in_hunk = False
    for line in patch.read_text().splitlines():
        if line.startswith("@@"):
            in_hunk = True
            continue
        if not in_hunk or line.startswith(("--- ", "+++ ")):
            continue
        if line.startswith("-"):
            before.append(line[1:])
        elif line.startswith("+"):
            after.append(line[1:])
        elif line.startswith(" ") or line == "":
            before.append(line[1:])
            after.append(line[1:])
        else:
            break  # a trailer (e.g. "-- " signature) ends the hunk
    return "\n".join(before) + "\n", "\n".join(after) + "\n"


@functools.cache
def data_dir() -> Path:
    """A directory holding smc_clc_vulnerable.c and smc_clc_fixed.c (made once per session)."""
    out = Path(tempfile.mkdtemp(prefix="smcpatch-synthetic-"))
    vulnerable, fixed = _images(PATCH)
    head = HEADER.format(patch=PATCH.name)
    (out / "smc_clc_vulnerable.c").write_text(head + vulnerable + FOOTER)
    (out / "smc_clc_fixed.c").write_text(head + fixed + FOOTER)
    return out
