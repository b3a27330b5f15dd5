"""features.race: the checkers a kernel's config allows, splats read from the kernel's log, the
exit rule. The real guest runs in tests/integration/test_race.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.commands import race as race_cmd
from smcpatch.commands.race import RaceResult
from smcpatch.guest import machine, race, reports
from smcpatch.guest.kernel import GuestKernel
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


# -- debug kernels (race --sanitizer) --------------------------------------------------------------
REPORTS = Path(__file__).resolve().parents[1] / "data" / "race-reports"


def _fake_guest(monkeypatch: pytest.MonkeyPatch, dmesg: str, guest: dict[str, object]) -> list[
        dict[str, object]]:
    """machine.run_script replaced by a guest that 'ran': it leaves race-result.json with this
    dmesg and these results; the config each boot was given is kept."""
    configs: list[dict[str, object]] = []

    def run_script(kernel: object, image: object, out: Path, script: str,
                   **kwargs: object) -> machine.GuestRun:
        configs.append(json.loads((out / "config.json").read_text()))
        (out / "race-result.json").write_text(json.dumps({**guest, "dmesg": dmesg, "ok": True}))
        (out / "console.log").write_text("")
        return machine.GuestRun(returncode=0, wall_s=70.0, boot_s=2.0, console=out / "console.log")

    monkeypatch.setattr(machine, "run_script", run_script)
    monkeypatch.setattr(race.share, "stage", _stage)
    return configs


def _stage(out: Path, programs: object, helper: object, modules: object,
           config: dict[str, object]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    return "/run/smcb/results/config.json"


KERNEL = GuestKernel(release="6.12.107-smcdbg-kcsan", vmlinuz=Path("/nonexistent/bzImage"),
                     modules_root=Path("/nonexistent/modroot"))
GUEST_FIGURES = {"churn_cycles": 61, "seconds": 60.4, "handshakes": 2546, "declined": 273,
                 "prfx_match_calls": 300, "returns": {"0": 279, "-19": 7, "-2": 14},
                 "kcsan_params": {"udelay_task": "2000"},
                 "kcsan_counters": {"setup_watchpoints": 3630, "data_races": 6,
                                    "races_unknown_origin": 0}}


def test_a_debug_kernel_run_is_judged_from_its_whole_reports(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dmesg = (REPORTS / "run-dsty-kw-vuln-ud2000-60s.dmesg.txt").read_text()
    configs = _fake_guest(monkeypatch, dmesg, GUEST_FIGURES)
    run = race.run_variant(KERNEL, tmp_path / "initrd", (tmp_path, tmp_path), "before",
                           tmp_path / "smc.ko", "kcsan-widen-vulnerable.patch",
                           race.RaceConfig(seconds=60), "ignore_loglevel", tmp_path,
                           kcsan_params={"udelay_task": "2000"}, whole_reports=True)
    assert configs[0]["kcsan_params"] == {"udelay_task": "2000"}  # the guest sets them
    assert run.reproduced and len(run.splats) == 4 and run.boot_reports == []
    [group] = run.reports
    assert group["functions"] == ["dst_dev_put", "smc_clc_prfx_match"] and group["count"] == 4
    assert group["scope"] == "cve-function" and group["two_sided"] == 4
    assert run.splat_context == group["first"][:40]
    assert run.kcsan_counters["setup_watchpoints"] == 3630 and run.attempts == 61
    text = race.finding(run, "kcsan", KernelConfig({}), widened=True)
    assert text.startswith("KCSAN printed 4 reports in smc_clc_prfx_match (4 naming both")
    assert "set up 3630 watchpoints and counted 6 data races" in text
    assert "61 churn cycles, 300 smc_clc_prfx_match calls, 7 of them found the device gone" in text


def test_a_kasan_boot_report_is_not_the_fixed_modules(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    dmesg = (REPORTS / "run-kasan-inline-fixed-60s.dmesg.txt").read_text()
    _fake_guest(monkeypatch, dmesg, {**GUEST_FIGURES, "kcsan_params": {}, "kcsan_counters": {}})
    run = race.run_variant(KERNEL, tmp_path / "initrd", (tmp_path, tmp_path), "after",
                           tmp_path / "smc.ko", "", race.RaceConfig(seconds=60), "no5lvl",
                           tmp_path, whole_reports=True)
    assert run.splats == [] and run.reports == [] and not run.reproduced
    assert run.boot_reports == ["BUG: KASAN: wild-memory-access in do_raw_spin_lock+0x11d/0x270"]
    result = RaceResult(kernel="6.12.107-1~deb12u1", release=KERNEL.release, runs=[run],
                        cmdline="no5lvl", checkers=[])
    assert result.fixed_survived  # boot's report is said, never held against the variant
    text = race.finding(run, "kasan", KernelConfig({}), widened=False)
    assert "No KASAN, lockdep, RCU-usage or atomic-sleep report in smc_clc_prfx_match" in text
    assert "1 report(s) came before the race started" in text
    assert "not attributed to this variant" in text


def test_kcsan_silence_is_said_with_the_figures() -> None:
    run = _run("before", attempts=17, seconds=30.0, prfx_match_calls=1705,
               kcsan_counters={"setup_watchpoints": 138, "data_races": 0},
               kcsan_params={"udelay_task": "2000"})
    text = race.finding(run, "kcsan", KernelConfig({"CONFIG_KCSAN_SKIP_WATCH": "4000"}),
                        widened=False)
    assert text.startswith("KCSAN printed no report in smc_clc_prfx_match in 30 s of churn: 17 "
                           "churn cycles, 1705 smc_clc_prfx_match calls")
    assert "set up 138 watchpoints" in text and "one sampled access in about 4000" in text
    assert "up to 2000 us" in text and "Not seen is not absent" in text and "--widen" in text
    fixed = race.finding(_run("after", kcsan_counters={"setup_watchpoints": 259}), "kcsan",
                         KernelConfig({}), widened=True)
    assert "dst_dev_rcu()" in fixed and "259 watchpoints" in fixed
    widened = race.finding(_run("before", returns={"-19": 7}), "kcsan", KernelConfig({}),
                           widened=True)
    assert "no swap landed inside a watch" in widened and "during 7 calls" in widened


def test_other_smc_reports_are_listed_not_hidden() -> None:
    run = _run("after", reports=[{"kind": "lockdep", "functions": ["smc_close_active"],
                                  "scope": "other-smc", "count": 2, "two_sided": 0,
                                  "unknown_origin": 0, "first": [],
                                  "title": "WARNING: possible circular locking dependency "
                                           "detected"}])
    text = race.finding(run, "kasan", KernelConfig({}), widened=False)
    assert ("Not explained by the fix (SMC code it does not change): 2 x WARNING: possible "
            "circular locking dependency detected.") in text


def test_a_debug_race_document_matches_its_schema(tmp_path: Path) -> None:
    from smcpatch.guest.debugkernel import SANITIZERS, DebugKernel
    from tests.schemas import problems

    debug = DebugKernel(checker=SANITIZERS["kcsan"], release="6.12.107-smcdbg-kcsan",
                        entry=tmp_path, compiler="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
                        cc="gcc-12", seconds=1000.0, objects=1955, from_cache=False,
                        fragment="CONFIG_KCSAN=y\n")
    found = reports.split_reports((REPORTS / "kcsan-6.12-dsty-kwiden-vuln-1.txt").read_text())
    run = _run("before", reports=[g.to_json() for g in reports.group(found)],
               kcsan_counters={"setup_watchpoints": 3630}, kcsan_params={"udelay_task": "2000"},
               verdict="vulnerable", finding="KCSAN printed 1 report", reproduced=True,
               boot_reports=["BUG: KASAN: x"], instrumented="kcsan-widen-vulnerable.patch")
    result = RaceResult(kernel="6.12.107-1~deb12u1", release=debug.release, runs=[run],
                        cmdline="ignore_loglevel", checkers=["KCSAN: ..."],
                        widening={"before": "kcsan-widen-vulnerable.patch"},
                        debug_kernel=race_cmd.debug_kernel_json(debug, "linux-source-6.12"))
    document = result.to_json()
    assert problems(document) == []
    assert document["debug_kernel"]["module_make_args"] == [
        "CC=gcc-12", "KCSAN_SANITIZE=n", "KCSAN_SANITIZE_smc_clc.o=y"]
    assert problems(RaceResult(kernel="k", release="r", runs=[], cmdline="",
                               checkers=[]).to_json()) == []  # no debug kernel: null
    (tmp_path / "race.json").write_text(json.dumps(document))  # the conftest fixture checks it


def test_a_kernel_without_sources_is_refused_before_any_work(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from smcpatch.errors import BadInput
    from smcpatch.kernels.targets import Target
    from smcpatch.pipeline import prepare

    target = Target(version="6.12.95", package_version="6.12.95-1~deb12u1", abi="6.12.95+deb12",
                    series="6.12", judge_only=True)
    monkeypatch.setattr(prepare, "resolve", lambda cache, request: [target])

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be fetched or built")

    monkeypatch.setattr(prepare, "prepare", no_work)
    request = race_cmd.RaceRequest(kernel="6.12.95", sanitizer="kcsan", cache_dir=tmp_path)
    with pytest.raises(BadInput, match="serves its image but not its source package"):
        race_cmd.run(request)


# -- the RCU canary (race --sanitizer kasan --canary) ----------------------------------------------
def test_the_canary_must_be_caught_or_the_run_fails() -> None:
    def result(*runs: race.VariantRun) -> RaceResult:
        return RaceResult(kernel="k", release="r", runs=list(runs), cmdline="", checkers=[])

    assert result(_run("after")).canary_caught is None  # no --canary: not asked
    assert result(_run("after"), _run("canary", reproduced=True)).canary_caught is True
    missed = result(_run("after"), _run("canary"))
    assert missed.canary_caught is False and missed.fixed_survived is True
    assert missed.to_json()["canary_caught"] is False


def test_the_canary_finding_says_what_its_silence_means() -> None:
    lockdep = [{"kind": "rcu", "functions": ["smc_clc_prfx_match"], "scope": "cve-function",
                "count": 1, "two_sided": 0, "unknown_origin": 0,
                "title": "WARNING: suspicious RCU usage", "first": []}]
    caught = race.finding(_run("canary", reports=lockdep, reproduced=True), "kasan",
                          KernelConfig({}), widened=False)
    assert caught.startswith("The RCU canary") and "lockdep's RCU check is live" in caught
    assert "lockdep (suspicious RCU usage) printed 1 report in smc_clc_prfx_match" in caught
    silent = race.finding(_run("canary"), "kasan", KernelConfig({}), widened=False)
    assert "was NOT reported" in silent and "proves nothing" in silent


@pytest.mark.parametrize("sanitizer", [None, "kcsan"])
def test_canary_without_kasan_is_refused_before_any_work(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sanitizer: str | None) -> None:
    from smcpatch.errors import BadInput
    from smcpatch.pipeline import prepare

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be resolved, fetched or built")

    monkeypatch.setattr(prepare, "resolve", no_work)
    monkeypatch.setattr(prepare, "prepare", no_work)
    request = race_cmd.RaceRequest(sanitizer=sanitizer, canary=True, cache_dir=tmp_path)
    with pytest.raises(BadInput, match="--canary needs --sanitizer kasan"):
        race_cmd.run(request)
