"""Livepatches built for real Debian kernels (smcpatch livepatch) and judged by the inspector:
our fix judged fixed with the kernel's vermagic and CRCs, and applied in Debian's kernel under
QEMU; Debian's vulnerable function and our fix with its RCU read lock removed, built the same
way, judged vulnerable; a fixed kernel refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smcpatch.commands import livepatch as livepatch_cmd
from smcpatch.inspection.livepatch import judge_livepatch
from smcpatch.inspection.signature import module_signature
from smcpatch.kernels.request import KernelRequest
from smcpatch.packaging import livepatch
from smcpatch.pipeline import build, variants
from smcpatch.pipeline.prepare import Options, prepare
from smcpatch.plumbing.cache import Cache
from tests.conftest import cache_root_for_tests, real_workspace
from tests.schemas import assert_valid

ROOT = Path(__file__).resolve().parents[2]
RELEASES = {"6.12.107": "6.12.107+deb12-amd64", "6.1.176": "6.1.0-50-amd64"}


def _run(kernel: str, out: Path, force: bool = False, prove: bool = False,
         keys: tuple[Path, Path] | None = None) -> livepatch_cmd.LivepatchResult:
    request = livepatch_cmd.LivepatchRequest(
        kernels=KernelRequest(kernels=(kernel,)), out_dir=out, json_path=out.parent / "r.json",
        cache_dir=cache_root_for_tests(), force=force, prove=prove,
        sign_key=keys[0] if keys else None, sign_cert=keys[1] if keys else None)
    return livepatch_cmd.run(request)


@pytest.mark.integration
@pytest.mark.parametrize("kernel", ["6.12.107", "6.1.176"])
def test_livepatch_built_judged_fixed_and_proven_in_the_guest(kernel: str,
                                                              tmp_path: Path) -> None:
    result = _run(kernel, tmp_path / "out", prove=True)
    assert result.exit_code == 0, result.message
    assert result.state == "vulnerable" and result.built
    j = result.judgement
    assert j is not None and j.verdict == "fixed", j and j.reasons
    assert j.livepatch and j.targets == ["smc:smc_clc_prfx_match"]
    assert j.objects[0].funcs[0].new_func == "livepatch_smc_clc_prfx_match"
    assert j.vermagic_ok and j.modversions_ok, j.modversions_mismatches
    assert j.vermagic and j.vermagic.startswith(RELEASES[kernel] + " ")
    ws = real_workspace(kernel)
    exported = livepatch.vmlinux_exports(ws.symvers)
    assert result.undefined and set(result.undefined) <= exported
    assert {"klp_enable_patch", "__rcu_read_lock", "__rcu_read_unlock"} <= set(result.undefined)
    document = json.loads((tmp_path / "r.json").read_text())
    assert_valid(document)
    assert document["judgement"]["verdict"] == "fixed"
    assert document["build_seconds"] > 0
    # the guest: Debian's smc.ko, then the livepatch applied, then disabled and removed
    proof = result.proof
    assert proof is not None and proof.ok, proof
    assert proof.insmod["smc.ko"] == 0 and proof.insmod[f"{livepatch.MODULE_NAME}.ko"] == 0
    assert (proof.enabled, proof.transition, proof.smc_patched) == ("1", "0", "1")
    assert proof.tainted is not None and proof.tainted & (1 << 15)  # TAINT_LIVEPATCH
    assert any("patching complete" in line for line in proof.kernel_lines)
    assert any("unpatching complete" in line for line in proof.kernel_lines)
    assert document["proof"]["ok"] is True


def _smc_dir_copy(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for path in src.iterdir():
        if path.suffix in (".c", ".h"):
            shutil.copy2(path, dest / path.name)
    return dest


@pytest.mark.integration
def test_broken_replacements_are_judged_vulnerable(tmp_path: Path) -> None:
    ws = real_workspace("6.12.107")
    cache = Cache.open(cache_root_for_tests())
    [prepared] = prepare(cache, [ws.target], Options())
    assert prepared.variants is not None
    after = variants.smc_dir(prepared.variants.after)
    unlocked = _smc_dir_copy(after, tmp_path / "unlocked")
    clc = unlocked / "smc_clc.c"
    fixed = livepatch.definitions(clc.read_text())["smc_clc_prfx_match"].text
    broken = fixed.replace("\trcu_read_lock();\n", "").replace("\trcu_read_unlock();\n", "")
    assert broken != fixed and "rcu_read_lock" not in broken
    clc.write_text(clc.read_text().replace(fixed, broken))
    shipped = _smc_dir_copy(ws.source_tree / "net" / "smc", tmp_path / "shipped")
    for name, smc_dir, why in (("unlocked", unlocked, "no RCU read lock"),
                               ("shipped", shipped, "dst_release")):
        built = livepatch.build_livepatch(ws, build.BuildEnv(), smc_dir, tmp_path / f"lp-{name}",
                                          ["smc_clc_prfx_match"], name)
        j = judge_livepatch(built.ko, ws.target.release, ws.symvers)
        assert j.verdict == "vulnerable", (name, j.reasons)
        assert why in " ".join(j.objects[0].funcs[0].reasons)
        assert j.vermagic_ok and j.modversions_ok


@pytest.mark.integration
def test_signed_livepatch(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    result = _run("6.1.176", tmp_path / "out", keys=keys)
    assert result.exit_code == 0 and result.judgement is not None
    assert result.judgement.verdict == "fixed" and result.judgement.modversions_ok
    assert result.signature.startswith("signed by smcpatch throwaway key"), result.signature
    sig = module_signature(result.module) if result.module else None
    assert sig is not None and sig["hash_algorithm"] == "sha256"


@pytest.mark.integration
def test_a_fixed_kernel_gets_no_livepatch(tmp_path: Path) -> None:
    result = _run("6.12.117", tmp_path / "out")
    assert (result.exit_code, result.built, result.state) == (0, False, "fixed")
    assert "already fixed" in result.message
    assert not (tmp_path / "out").exists()
    assert_valid(json.loads((tmp_path / "r.json").read_text()))


@pytest.mark.integration
def test_cli_refuses_an_arch_that_cannot_livepatch_before_any_download(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "smcpatch", "livepatch", "--kernel", "6.1.176", "--arch", "arm64",
         "--cache", str(cache)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "cannot be live-patched" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not cache.exists() or not any(cache.rglob("*.deb"))
