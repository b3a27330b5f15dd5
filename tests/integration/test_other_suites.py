"""Beyond the default matrix: trixie's gcc-14 build in a chroot, and a compile-only 7.x kernel."""

from __future__ import annotations

import pytest

from smcpatch.kernels.targets import Target
from smcpatch.pipeline import prepare as pipeline
from smcpatch.plumbing.cache import Cache

pytestmark = pytest.mark.integration


def test_trixie_kernel_builds_with_its_own_gcc14_and_matches_debian(
        test_cache: Cache, matrix: dict[str, Target]) -> None:
    target = matrix["6.12.107+deb13"]
    r = pipeline.verify_target(test_cache, target, pipeline.Options())
    assert r.ok, (r.error, r.problems)
    assert r.build_env == "trixie" and "gcc-14" in r.compiler
    assert (r.source_state, r.before and r.before.verdict, r.after and r.after.verdict) == (
        "vulnerable", "vulnerable", "fixed")
    assert r.vermagic_ok and r.modversions_ok
    # our gcc-14 build of the shipped source has Debian's own smc_clc_prfx_match
    assert r.shipped is not None and r.shipped.verdict == "vulnerable"
    assert r.shipped_same_as_before is True
    assert r.changed_functions == ["smc_clc_prfx_match"]


def test_newest_kernel_is_compile_and_inspect_only(test_cache: Cache,
                                                   matrix: dict[str, Target]) -> None:
    target = matrix["7.2.13"]
    r = pipeline.verify_target(test_cache, target, pipeline.Options())
    assert r.error is None, r.error
    assert r.compile_only and r.build_env == "sid"
    assert any("compile-and-inspect only" in note for note in r.notes)
    assert r.shipped is None  # Debian ships no smc.ko: SMC is off in its config
    assert (r.before and r.before.verdict, r.after and r.after.verdict) == ("vulnerable", "fixed")
    assert r.ok, r.problems
