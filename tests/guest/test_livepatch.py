"""The livepatch guest's console read (smcpatch.guest.livepatch): each step's evidence, and a
proof that is not one when a step fails."""

from __future__ import annotations

from smcpatch.guest.livepatch import INIT, Proof, read_console

NAME = "livepatch_smc_cve_2025_40168"
CONSOLE = f"""\
LP-BOOTED 6.12.107+deb12-amd64
LP-INSMOD ib_core.ko 0 1.50
LP-INSMOD smc.ko 0 1.90
LP-INSMOD {NAME}.ko 0 2.10
[    2.11] livepatch: enabling patch '{NAME}'
LP-STATE enabled=1 transition=0 patched=1 at=3.35
LP-SMC 1
LP-DISABLE 0 3.36
LP-GONE yes 4.40
LP-RMMOD 0 4.45
LP-LEFT 0
LP-TAINTED 32768
LP-DMESG
[    2.11] livepatch: enabling patch '{NAME}'
[    2.12] {NAME}: tainting kernel with TAINT_LIVEPATCH
[    3.36] livepatch: '{NAME}': unpatching complete
LP-DONE
"""


def _proof() -> Proof:
    return Proof(release="6.12.107+deb12-amd64", module=f"{NAME}.ko")


def test_every_step_read() -> None:
    proof = _proof()
    read_console(CONSOLE, proof)
    assert proof.insmod == {"ib_core.ko": 0, "smc.ko": 0, f"{NAME}.ko": 0}
    assert (proof.enabled, proof.transition, proof.smc_patched) == ("1", "0", "1")
    assert proof.transition_seconds == 1.25
    assert proof.smc_loaded and proof.gone and proof.gone_at == 4.40
    assert (proof.disable_status, proof.rmmod_status, proof.left_loaded) == (0, 0, False)
    assert proof.tainted == 32768 and len(proof.kernel_lines) == 3
    assert proof.ok and proof.to_json()["ok"] is True


def test_a_refused_module_or_a_stuck_transition_is_no_proof() -> None:
    refused = _proof()
    read_console(CONSOLE.replace(f"{NAME}.ko 0 2.10", f"{NAME}.ko 1 2.10")
                 + "LP-DMESG\n[ 2.1] livepatch: Unknown symbol klp_enable_patch\n", refused)
    assert not refused.ok
    stuck = _proof()
    read_console(CONSOLE.replace("transition=0", "transition=1"), stuck)
    assert not stuck.ok


def test_the_init_names_the_livepatch_everywhere() -> None:
    script = INIT.replace("@NAME@", NAME)
    assert f"D=/sys/kernel/livepatch/{NAME}" in script and f"rmmod {NAME}" in script
    assert "@NAME@" not in script
