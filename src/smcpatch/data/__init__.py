"""smcpatch's own data, shipped inside the package (a wheel or `pip install .` carries it):

- ``kernels.toml``: the default kernel matrix (``--matrix FILE`` replaces it);
- ``patches/``: our unified diffs and the ``series`` file (``--patches DIR`` replaces it);
- ``kbuild/``: the out-of-tree build recipe (``smc.config``);
- ``guest/``: the files the QEMU guest runs (init script, benchmark driver, client/server);
- ``canary-prfx-match-delay.patch``: the benchmark's deliberate-regression patch;
- ``race/``: the race's widening patches (a busy-wait at the same point of both variants) and
  the KCSAN widening twins (a 20 ms re-read of the device, for `race --sanitizer --widen`);
- ``debugkernel/``: the config fragments of the race's debug kernels (base, per series, checker);
- ``fixes/``: one signature per fix of the upstream series (how a binary shows it), read by
  :mod:`smcpatch.inspection.fixes`;
- ``cocci/``: the Coccinelle rules of `audit`, one per fix (cvehound's format), and
  ``cocci/general/``: the rule that finds the pattern anywhere;
- ``schemas/``: the JSON Schema (draft 2020-12) of every JSON document smcpatch writes, by its
  ``schema`` value (:data:`SCHEMAS`; docs/json.md says what each key means).

Found with importlib.resources, so they are where the package is, from any working directory.
Each user of a path checks it exists when it reads it (a missing file is a ConfigError there).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _path(*parts: str) -> Path:
    # a real path: patch(1), make and QEMU's 9p share read these files directly
    return Path(str(files(__name__).joinpath(*parts)))


DEFAULT_MATRIX = _path("kernels.toml")
DEFAULT_PATCHES = _path("patches")
KBUILD_RECIPE = _path("kbuild")
GUEST_DIR = _path("guest")
CANARY_PATCH = _path("canary-prfx-match-delay.patch")
DEBUGKERNEL_DIR = _path("debugkernel")
FIXES_DIR = _path("fixes")
RACE_WIDEN_PATCHES = {"before": _path("race", "race-widen-vulnerable.patch"),
                      "after": _path("race", "race-widen-fixed.patch")}
# --widen with --sanitizer: a 20 ms re-read of the device that KCSAN's sampling lands on
KCSAN_WIDEN_PATCHES = {"before": _path("race", "kcsan-widen-vulnerable.patch"),
                       "after": _path("race", "kcsan-widen-fixed.patch")}
# --canary with --sanitizer kasan: our fix with its device read moved out of the RCU section,
# which lockdep must report (the proof that the debug kernel's checker is live)
RCU_CANARY_PATCH = _path("race", "rcu-canary.patch")
# `audit`'s Coccinelle rules: one per fix here, the general pattern in general/
COCCI_DIR = _path("cocci")
# the JSON Schema of each document kind smcpatch writes, by the document's `schema` value
SCHEMAS = {f"smcpatch-{kind}/1": _path("schemas", f"{kind}.schema.json")
           for kind in ("report", "inspect", "dkms", "scan", "race", "host", "bench",
                           "audit", "livepatch")}
