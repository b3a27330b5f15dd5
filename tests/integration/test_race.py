"""`inv race`, short: Debian's vulnerable 6.12.107 and our fixed module, each in its own boot
of the real kernel with the checkers on, under device churn for a few seconds. The fixed module
must run (the kprobe counts its calls) and stay silent; the vulnerable one is reported as it is.
The broad runs (minutes, --widen) are in docs/race.md with their figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.plumbing.cache import Cache
from tests.faults import inv

pytestmark = [pytest.mark.integration, pytest.mark.vm]


def test_both_modules_under_churn(test_cache: Cache, tmp_path: Path) -> None:
    out = tmp_path / "race.json"
    proc = inv("race", "--kernel", "6.12.107", "--seconds", "12", "--cache",
               str(test_cache.root), "--json", str(out), timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
    result = json.loads(out.read_text())
    runs = {r["variant"]: r for r in result["variants"]}
    assert set(runs) == {"before", "after"}
    for run in runs.values():
        assert run["outcome"] == "finished", run
        assert run["attempts"] > 0  # the device was deleted and recreated
        assert run["prfx_match_calls"] > 0  # and smc_clc_prfx_match ran meanwhile
        # every call returned (a call in flight when the probes stopped may count on one side)
        assert abs(sum(run["returns"].values()) - run["prfx_match_calls"]) <= 2, run
        assert not run["instrumented"]
    assert runs["after"]["splats"] == [] and result["fixed_survived"] is True
    assert "slub_debug=P" in result["kernel_cmdline"]
    assert "kfence.sample_interval" in result["kernel_cmdline"]  # 6.12 has KFENCE
    assert "the same RCU read-side section" in result["analysis"]
    assert "survived every attempt" in proc.stdout
