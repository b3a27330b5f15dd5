"""DKMS packages of real Debian kernels, built with Debian's dkms (smcpatch.packaging.dkms)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch import inspection
from smcpatch.commands import dkms as dkms_cmd
from smcpatch.errors import BadInput
from smcpatch.inspection import signature
from smcpatch.packaging import dkms, signing
from smcpatch.pipeline.fetch import Workspace
from smcpatch.plumbing.cache import Cache
from tests.packaging.test_dkms import MAIN_PATCH, _nothing_outside, needs_root, states_for
from tests.schemas import assert_valid

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@needs_root
def test_dkms_build_vulnerable_kernel(workspace_for: Callable[[str], Workspace],
                                      tmp_path: Path) -> None:
    ws = workspace_for("6.1.176")
    states = states_for(ws)
    assert [s.state for s in states] == ["vulnerable"]
    package = dkms.write_package(ws, states, tmp_path / "pkg")
    built = dkms.build_package(ws, package, tmp_path / "work")
    assert built.patches_applied == [MAIN_PATCH]
    assert built.dkms_version.startswith("dkms-")
    assert sorted(built.modules) == ["smc", "smc_diag"]
    info = inspection.inspect_module(built.smc)
    assert info.evidence.verdict == "fixed", info.evidence.reasons
    assert inspection.check_vermagic(info, "6.1.0-50-amd64")[0]
    ok, mismatches = inspection.check_modversions(info, inspection.read_module_symvers(ws.symvers))
    assert ok, mismatches
    assert ws.shipped_module is not None
    assert inspection.inspect_module(ws.shipped_module).evidence.verdict == "vulnerable"
    # dkms's module differs from Debian's in exactly the function our patch changes
    assert inspection.changed_functions(ws.shipped_module, built.smc) == ["smc_clc_prfx_match"]
    assert signature.module_signature(built.smc) is None  # signing off unless asked
    assert "applying patch" in built.output
    _nothing_outside("6.1.0-50-amd64")


@pytest.mark.integration
@needs_root
def test_dkms_build_fixed_kernel_signed(workspace_for: Callable[[str], Workspace],
                                        tmp_path: Path) -> None:
    ws = workspace_for("6.12.117")
    states = states_for(ws)
    assert [s.state for s in states] == ["fixed"]
    package = dkms.write_package(ws, states, tmp_path / "pkg")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=smcpatch dkms test key", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    built = dkms.build_package(ws, package, tmp_path / "work", sign_key=key, sign_cert=cert)
    assert built.patches_applied == []
    info = inspection.inspect_module(built.smc)
    assert info.evidence.verdict == "fixed", info.evidence.reasons
    assert ws.shipped_module is not None
    assert inspection.changed_functions(ws.shipped_module, built.smc) == []
    assert inspection.same_function(ws.shipped_module, built.smc, "smc_clc_prfx_match") is True
    sig = signature.module_signature(built.smc)
    assert sig is not None
    assert (sig["signer"], sig["hash_algorithm"]) == ("smcpatch dkms test key", "sha256")
    assert signing.verify_signature(built.smc, cert)
    _nothing_outside("6.12.117+deb12-amd64")


@pytest.mark.integration
@needs_root
def test_dkms_refuses_other_kernel(workspace_for: Callable[[str], Workspace],
                                   tmp_path: Path) -> None:
    package = dkms.write_package(workspace_for("6.1.176"), states_for(workspace_for("6.1.176")),
                                 tmp_path / "pkg")
    with pytest.raises(BadInput, match="BUILD_EXCLUSIVE"):
        dkms.build_package(workspace_for("6.1.192"), package, tmp_path / "work")


@pytest.mark.integration
def test_all_fixes_apply_in_order(workspace_for: Callable[[str], Workspace],
                                  tmp_path: Path) -> None:
    ws = workspace_for("6.1.176")
    states = states_for(ws, ["all"])
    vulnerable = [s.variant.path.name for s in states if s.state == "vulnerable"]
    assert len(vulnerable) == len(states) == 4
    package = dkms.write_package(ws, states, tmp_path / "pkg")
    conf = (package / "dkms.conf").read_text()
    for i, name in enumerate(vulnerable):
        assert f'PATCH[{i}]="{name}"' in conf and f'PATCH_MATCH[{i}]="^6\\.1\\.0-50-"' in conf
    assert sorted(p.name for p in (package / "patches").iterdir()) == sorted(vulnerable)


@pytest.mark.integration
@needs_root
def test_dkms_command_check_signed(workspace_for: Callable[[str], Workspace],
                                      test_cache: object, tmp_path: Path) -> None:
    """What `inv dkms --kernel 6.12.107 --check --sign-key K --sign-cert C` does."""
    from smcpatch.plumbing.cache import Cache

    assert isinstance(test_cache, Cache)
    ws = workspace_for("6.12.107")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=smcpatch check key", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    from smcpatch.kernels.request import KernelRequest

    summary = dkms_cmd.run(dkms_cmd.DkmsRequest(
        kernels=KernelRequest((ws.target.version,)), out_dir=tmp_path / "pkg",
        cache_dir=test_cache.root, check=True, sign_key=key, sign_cert=cert)).to_json()
    assert_valid(json.loads(json.dumps(summary)), "smcpatch-dkms/1")
    assert summary["version"] == "6.12.107-1.deb12u1"
    assert summary["release_regex"] == "^6\\.12\\.107\\+deb12-"
    assert summary["fixes"] == [{"id": "CVE-2025-40168", "state": "vulnerable",
                                 "variant": "main", "patch": MAIN_PATCH}]
    check = summary["check"]
    assert check["verdict"] == "fixed", check["reasons"]
    assert check["patches_applied"] == [MAIN_PATCH]
    assert check["vermagic_ok"] is True and check["modversions_ok"] is True
    assert check["changed_vs_shipped"] == ["smc_clc_prfx_match"]
    assert check["signature"]["signer"] == "smcpatch check key"
    assert check["signature_text"].startswith("signed by smcpatch check key (sha256, ")
    assert not list((test_cache.root / "tmp").iterdir())  # the check's work dir is gone


@pytest.mark.integration
def test_module_src_builds_with_a_plain_make(test_cache: Cache, tmp_path: Path) -> None:
    """`smcpatch dkms --kernel K` without --out: module_src/<release>/ in the current directory,
    the verified fixed sources, which a plain out-of-tree make builds into a fixed smc.ko."""
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "dkms", "--kernel",
                           "6.1.176", "--cache", str(test_cache.root), "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert_valid(summary, "smcpatch-dkms/1")
    package = tmp_path / "module_src" / "6.1.0-50-amd64"
    assert Path(summary["package"]) == package and summary["fixed_sources"] is True
    assert "PATCH[" not in (package / "dkms.conf").read_text()
    kdir = next(test_cache.root.glob("kdir/6.1.176-1_amd64/root/usr/src/linux-headers-*"))
    make = subprocess.run(["make", "-C", str(kdir), f"M={package}", "-j2"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert make.returncode == 0, make.stdout[-2000:] + make.stderr[-2000:]
    built = inspection.inspect_module(package / "net" / "smc" / "smc.ko")
    assert built.evidence.verdict == "fixed"
    assert built.vermagic is not None and built.vermagic.startswith("6.1.0-50-amd64 ")
