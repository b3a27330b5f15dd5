"""features.race: the checkers a kernel's config allows, splats read from the kernel's log, the
exit rule. The real guest runs in tests/integration/test_race.py."""

from __future__ import annotations

from pathlib import Path

from smcpatch.commands.race import RaceResult
from smcpatch.guest import race
from smcpatch.kernels.kconfig import KernelConfig

OOPS = """\
[   11.4] smcpatch-race: before start
[   12.0] general protection fault, probably for non-canonical address 0x6b6b6b6b6b6b6b73
[   12.0] CPU: 1 PID: 77 Comm: kworker/1:2 Tainted: G           OE      6.12.107+deb12-amd64
[   12.0] Workqueue: events smc_listen_work [smc]
[   12.0] RIP: 0010:smc_clc_prfx_match+0x6d/0x200 [smc]
[   12.1] Kernel panic - not syncing: Fatal exception
"""


def test_checkers_follow_the_kernel_config(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_SLUB_DEBUG=y\nCONFIG_KFENCE=y\nCONFIG_RCU_CPU_STALL_TIMEOUT=21\n")
    cmdline, said = race.checker_cmdline(KernelConfig.read(config))
    assert cmdline.split() == ["ignore_loglevel", "slub_debug=P", "kfence.sample_interval=100",
                               "rcupdate.rcu_cpu_stall_timeout=21"]
    assert any(s.startswith("slub_debug=P: slab poisoning") for s in said)
    config.write_text("CONFIG_SLUB_DEBUG=y\n")  # Debian's 6.1 has no KFENCE
    assert "kfence" not in race.checker_cmdline(KernelConfig.read(config))[0]


def test_splats_are_read_from_the_kernel_and_placed() -> None:
    firsts, context = race.read_splats(OOPS, "smcpatch-race: before start")
    assert firsts[0].startswith("general protection fault")
    assert firsts[-1].startswith("Kernel panic")
    assert any("smc_clc_prfx_match" in line for line in context)  # in the SMC path
    assert race.read_splats("[ 1.0] all quiet\n[ 2.0] smcpatch-race: after start\n") == ([], [])
    # a report before the variant's own start marker belongs to someone else
    assert race.read_splats(OOPS, "smcpatch-race: after start")[0] != []  # no marker: all
    noisy = "[ 1.0] WARNING: CPU: 0 PID: 1 at boot\n[ 2.0] smcpatch-race: after start\n"
    assert race.read_splats(noisy, "smcpatch-race: after start") == ([], [])


def _run(variant: str, **extra: object) -> race.VariantRun:
    run = race.VariantRun(variant=variant, module="smc.ko", instrumented="", outcome="finished",
                          prfx_match_calls=100)
    for key, value in extra.items():
        setattr(run, key, value)
    return run


def test_the_exit_rule_is_the_fixed_module_surviving() -> None:
    def result(*runs: race.VariantRun) -> RaceResult:
        return RaceResult(kernel="k", release="r", runs=list(runs), cmdline="", checkers=[])

    assert result(_run("before", splats=["BUG: x"], reproduced=True), _run("after")
                  ).fixed_survived is True  # the vulnerable outcome is reported, not judged
    assert result(_run("after", splats=["WARNING: CPU: 1"])).fixed_survived is False
    assert result(_run("after", outcome="panicked")).fixed_survived is False
    assert result(_run("after", prfx_match_calls=0)).fixed_survived is False  # never ran
    assert result(_run("before")).fixed_survived is None
