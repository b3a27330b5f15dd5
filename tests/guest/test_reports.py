"""guest.reports on real kernel reports: tests/data/race-reports/ holds KCSAN and KASAN reports
captured verbatim in QEMU guests of debug kernels built from Debian's 6.12.107 and 6.1.176
sources (kernel log output; README.md there says which run each came from), and three whole
dmesgs of race runs. The lockdep, RCU and atomic-sleep texts below are written in the format of
those checkers' reports (none fired in the captured runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.guest import reports

DATA = Path(__file__).resolve().parents[1] / "data" / "race-reports"
TWO_SIDED_612 = sorted(DATA.glob("kcsan-6.12-dsty-*.txt"))
TWO_SIDED_61 = sorted(DATA.glob("kcsan-6.1-dsty-*.txt"))
UNKNOWN_ORIGIN = sorted(DATA.glob("kcsan-6.12-coren-*.txt"))


def one(path: Path) -> reports.KernelReport:
    [report] = reports.split_reports(path.read_text())
    return report


def test_the_data_is_there() -> None:
    assert len(TWO_SIDED_612) == 4 and len(TWO_SIDED_61) == 5 and len(UNKNOWN_ORIGIN) == 2


@pytest.mark.parametrize("path", TWO_SIDED_612 + TWO_SIDED_61, ids=lambda p: p.name)
def test_a_two_sided_kcsan_report_names_the_writer_and_the_reader(path: Path) -> None:
    report = one(path)
    assert report.kind == "kcsan"
    assert report.title == "BUG: KCSAN: data-race in dst_dev_put / smc_clc_prfx_match [smc]"
    assert report.functions == ["dst_dev_put", "smc_clc_prfx_match"]
    assert report.two_sided and not report.unknown_origin
    assert report.scope == "cve-function"
    # the whole report: both stacks, the value change, the task; no separator lines
    text = "\n".join(report.lines)
    assert "by interrupt on cpu" in text and "smc_listen_work" in text
    assert report.value_changed.endswith(("-> 0xff11000002fa9000", "-> 0xff11000002e49000"))
    assert report.lines[-1].startswith("Workqueue: smc_hs_wq smc_listen_work [smc]")
    assert not any(set(ln) == {"="} for ln in report.lines)


def test_6_1_writes_plainly_and_6_12_marked() -> None:
    assert all("write (marked) to" in "\n".join(one(p).lines) for p in TWO_SIDED_612)
    assert all("\nwrite to 0x" in "\n".join(one(p).lines) for p in TWO_SIDED_61)


@pytest.mark.parametrize("path", UNKNOWN_ORIGIN, ids=lambda p: p.name)
def test_an_unknown_origin_report_names_the_reader_only(path: Path) -> None:
    report = one(path)
    assert report.kind == "kcsan" and report.unknown_origin and not report.two_sided
    assert report.functions == ["smc_clc_prfx_match"]
    assert report.scope == "cve-function"
    assert report.lines[2].startswith("race at unknown origin, with read to")


def test_a_kasan_report_outside_smc() -> None:
    report = one(DATA / "kasan-6.12-boot-wild-memory-access-do_raw_spin_lock.txt")
    assert report.kind == "kasan"
    assert report.title == "BUG: KASAN: wild-memory-access in do_raw_spin_lock+0x11d/0x270"
    assert report.functions == ["do_raw_spin_lock"] and report.scope == "kernel"
    # up to its closing line, not the taint line after it
    assert report.lines[-1].strip() == "</TASK>"


def test_reports_are_grouped_by_the_functions_they_name() -> None:
    text = "\n".join(p.read_text() for p in [*TWO_SIDED_612, *UNKNOWN_ORIGIN])
    groups = reports.group(reports.split_reports(text))
    assert [(g.functions, g.count, g.two_sided, g.unknown_origin) for g in groups] == [
        (["dst_dev_put", "smc_clc_prfx_match"], 4, 4, 0), (["smc_clc_prfx_match"], 2, 0, 2)]
    assert groups[0].first == one(TWO_SIDED_612[0]).lines  # the first one, whole
    assert groups[0].to_json()["scope"] == "cve-function"


def test_a_whole_race_run_of_the_widened_vulnerable_module() -> None:
    text = (DATA / "run-dsty-kw-vuln-ud2000-60s.dmesg.txt").read_text()
    found = reports.split_reports(text, "smcpatch-race: before start")
    assert len(found) == 4 and all(r.during == "race" for r in found)
    assert reports.reproduced(found)
    [group] = reports.group(found)
    assert group.count == 4 and group.two_sided == 4


def test_the_fixed_module_runs_leave_no_report() -> None:
    for name in ("run-dsty-kw-fixed-ud2000-60s.dmesg.txt",):
        found = reports.split_reports((DATA / name).read_text(), "smcpatch-race: after start")
        assert found == [] and not reports.reproduced(found)


def test_a_report_before_the_start_marker_is_boots_not_the_variants() -> None:
    text = (DATA / "run-kasan-inline-fixed-60s.dmesg.txt").read_text()
    [report] = reports.split_reports(text, "smcpatch-race: after start")
    assert report.kind == "kasan" and report.during == "boot"
    assert not reports.reproduced([report])
    # without a marker to place it (no race to attribute to), nothing is a variant's either
    assert reports.split_reports(text, "smcpatch-race: never came")[0].during == "boot"
    # read without a marker at all (a log of the race alone), it counts
    assert reports.split_reports(text)[0].during == "race"


def test_a_cve_report_during_boot_does_not_reproduce() -> None:
    text = (TWO_SIDED_612[0].read_text() + "[ 50.0] smcpatch-race: before start\n")
    found = reports.split_reports(text, "smcpatch-race: before start")
    assert found[0].scope == "cve-function" and not reports.reproduced(found)


# -- the other checkers, in their reports' format --------------------------------------------------
LOCKDEP = """\
[   40.1] smcpatch-race: after start
[   41.0] ======================================================
[   41.0] WARNING: possible circular locking dependency detected
[   41.0] 6.12.107-smcdbg-kasan #1 Tainted: G           O
[   41.0] ------------------------------------------------------
[   41.0] kworker/1:1/35 is trying to acquire lock:
[   41.0] ffff888004a8b0b0 (&smc->clcsock_release_lock){+.+.}, at: smc_close_active+0x1f/0x50
[   41.0]
[   41.0] stack backtrace:
[   41.0] Call Trace:
[   41.0]  <TASK>
[   41.0]  dump_stack_lvl+0x66/0xa0
[   41.0]  check_noncircular+0x1c2/0x200
[   41.0]  __lock_acquire+0x1b5e/0x2b40
[   41.0]  lock_acquire+0xce/0x2d0
[   41.0]  smc_close_active+0x1f/0x500 [smc]
[   41.0]  smc_release+0x9c/0x260 [smc]
[   41.0]  </TASK>
[   42.0] =============================
[   42.0] WARNING: suspicious RCU usage
[   42.0] 6.12.107-smcdbg-kasan #1 Tainted: G           O
[   42.0] -----------------------------
[   42.0] include/net/dst.h:570 suspicious rcu_dereference_check() usage!
[   42.0] stack backtrace:
[   42.0]  dump_stack_lvl+0x66/0xa0
[   42.0]  lockdep_rcu_suspicious+0x150/0x1b0
[   42.0]  __smc_diag_dump+0x2b/0x300 [smc_diag]
[   43.0] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:585
[   43.0] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 35, name: kworker/1:1
[   43.0] Call Trace:
[   43.0]  dump_stack_lvl+0x66/0xa0
[   43.0]  __might_resched+0x1c4/0x290
[   43.0]  mutex_lock_nested+0x1d/0x30
[   43.0]  ib_find_cached_gid+0x40/0x100 [ib_core]
[   44.0] ------------[ cut here ]------------
[   44.0] WARNING: CPU: 1 PID: 35 at net/core/dst.c:172 dst_release+0x7e/0x90
[   44.0] Call Trace:
[   44.0]  smc_clc_prfx_match+0x10a/0x3c0 [smc]
[   44.0] ---[ end trace 0000000000000000 ]---
[   45.0] smcpatch-race: after end
"""


def test_lockdep_rcu_atomic_sleep_and_warn_reports() -> None:
    found = reports.split_reports(LOCKDEP, "smcpatch-race: after start")
    assert [(r.kind, r.functions, r.scope) for r in found] == [
        ("lockdep", ["smc_close_active"], "other-smc"),
        ("rcu", ["__smc_diag_dump"], "other-smc"),  # in the smc_diag module
        ("atomic-sleep", ["mutex_lock_nested"], "kernel"),
        ("warn", ["dst_release"], "kernel"),
    ]
    assert found[0].lines[1].startswith("6.12.107-smcdbg-kasan")  # its header, not cut short
    assert found[-1].lines[-1].startswith("---[ end trace")
    assert not reports.reproduced(found)  # none of them names smc_clc_prfx_match first


def test_a_real_lockdep_rcu_report_of_the_canary() -> None:
    """Captured from `race --sanitizer kasan --canary` on 6.12.107: lockdep's RCU check names
    the function whose reads ran outside RCU (the stack's first frame after lockdep's own)."""
    text = (DATA / "lockdep-6.12-rcu-canary.txt").read_text()
    found = reports.split_reports(text, "smcpatch-race: canary start")
    assert [(r.kind, r.functions, r.scope, r.during) for r in found] == [
        ("rcu", ["smc_clc_prfx_match"], "cve-function", "race")] * 2
    assert any("sock.h:2113 suspicious rcu_dereference_check() usage!" in ln
               for ln in found[0].lines)
    assert any("dst.h:574 suspicious" in ln for ln in found[1].lines)  # dst_dev_rcu()
    assert reports.reproduced(found)
    [group] = reports.group(found)
    assert group.count == 2 and group.first[0] == "WARNING: suspicious RCU usage"
