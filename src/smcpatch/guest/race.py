"""The race under attack: both modules in Debian's own kernel under device churn, with the
memory and lock checkers a stock Debian kernel allows at boot, the verdict from the kernel's own
reports (never from timing).

Host side: the checkers are picked from the kernel's .config, each variant boots once (so a
kernel that oopses is attributed to its variant, and stopped: oops=panic, -no-reboot), the guest
(data/guest/guest_race.py) drives clcv1 handshakes over a veth pair that a churn loop deletes
and recreates, and the console and dmesg are searched for splats. On a debug kernel
(guest.debugkernel: KCSAN, KASAN+lockdep) the reports are read whole (guest.reports), grouped by
the functions they name, and a report before the variant's start marker is boot's.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, VmError
from ..kernels.kconfig import KernelConfig
from . import machine, reports, share
from .kernel import GuestKernel

GUEST_FILES = ("guest_race.py", "guest_bench.py")
PORT = 18402

# What the kernel prints when its checkers catch something (first line of each report).
SPLAT = re.compile(
    r"BUG: |general protection fault|KFENCE: |Poison overwritten|Redzone overwritten|"
    r"Object padding overwritten|use-after-free|Oops|WARNING: CPU|kernel BUG at|"
    r"rcu: INFO: rcu_\w+ (?:self-)?detected stall|detected stalls|watchdog: BUG: soft lockup|"
    r"INFO: task .* blocked for more than|Kernel panic|list_(?:add|del) corruption|"
    r"page dumped because|Unable to handle")
# a splat in the SMC path: its report names SMC's code
SMC_PATH = re.compile(r"\bsmc_\w+|\[smc\]")


@dataclass
class RaceConfig:
    seconds: float = 60.0  # churn time per variant
    attempts: int = 0  # churn cycles per variant (delete + recreate); 0: as many as time allows
    timeout_s: float = 600.0  # per boot
    memory_mb: int = 2048
    smp: int = 2


@dataclass
class VariantRun:
    variant: str  # before (vulnerable) | after (fixed)
    module: str
    instrumented: str  # "" or the widening patch it was built with
    attempts: int = 0  # churn cycles: the device deleted and recreated
    seconds: float = 0.0
    handshakes: int = 0  # clcv1 connection attempts
    declined: int = 0  # answered with the server's CLC decline (the v1 path ran to its end)
    prfx_match_calls: int = 0  # the kprobe's count: the function under test ran
    # its return values (kretprobe): "-19" (-ENODEV) is a call that found the dst's device
    # gone (blackhole_netdev in its place): the window was hit, and survived
    returns: dict[str, int] = field(default_factory=dict)
    splats: list[str] = field(default_factory=list)  # first line of each report
    splat_context: list[str] = field(default_factory=list)  # the first report's lines
    reproduced: bool = False  # a kernel-detected fault in the SMC path
    outcome: str = ""  # finished | panicked | timed out | failed
    error: str = ""
    boot_s: float | None = None
    # every report of the run (after the start marker), grouped by checker and the functions
    # it names (reports.ReportGroup.to_json)
    reports: list[dict[str, Any]] = field(default_factory=list)
    boot_reports: list[str] = field(default_factory=list)  # before the start marker: boot's
    kcsan_params: dict[str, str] = field(default_factory=dict)  # set for the churn only
    kcsan_counters: dict[str, int] = field(default_factory=dict)  # their change over the churn
    verdict: str = ""  # the inspector's verdict on the module loaded (debug builds)
    finding: str = ""  # what the checker saw in smc_clc_prfx_match, or why it saw nothing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def checker_cmdline(config: KernelConfig, poison: bool = True) -> tuple[str, list[str]]:
    """The checkers this kernel has, switched on at boot, and what each one is. A debug kernel
    (poison False) keeps its own checker and the detectors, without slab and page poisoning or
    KFENCE: KASAN checks every access itself, and KCSAN is not about freed memory."""
    parts: list[tuple[str, str]] = [("ignore_loglevel", "every kernel message on the console")]
    if poison and config.get("CONFIG_SLUB_DEBUG") == "y":
        parts.append(("slub_debug=P", "slab poisoning: freed objects filled with 0x6b"))
    if poison and config.get("CONFIG_PAGE_POISONING") == "y":
        parts.append(("page_poison=1", "freed pages poisoned"))
    if poison and config.get("CONFIG_KFENCE") == "y":
        # every interval KFENCE flips a static key (int3 text patching): at 1 ms, QEMU TCG's
        # two vCPUs caught an int3 mid-patch at boot ("Oops: int3" in sched_clock_tick)
        parts.append(("kfence.sample_interval=100",
                      "KFENCE: a sampled allocation every 100 ms guarded"))
    if config.get("CONFIG_DETECT_HUNG_TASK") == "y":
        parts.append(("hung_task_timeout_secs=30", "hung tasks reported after 30 s"))
    if config.get("CONFIG_SOFTLOCKUP_DETECTOR") == "y":
        parts.append(("watchdog_thresh=10", "soft lockups reported after 20 s"))
    if config.get("CONFIG_RCU_CPU_STALL_TIMEOUT"):
        parts.append((f"rcupdate.rcu_cpu_stall_timeout="
                      f"{config.get('CONFIG_RCU_CPU_STALL_TIMEOUT')}", "RCU stalls reported"))
    # oops=panic (machine.run_script): an oops stops the guest; WARNs are counted, not fatal
    return " ".join(p for p, _ in parts), [f"{p}: {what}" for p, what in parts]


def read_splats(text: str, start_marker: str | None = None) -> tuple[list[str], list[str]]:
    """The first line of every report in the kernel's log (after the marker, if given), and the
    lines of the first report (for the JSON and the table)."""
    lines = [re.sub(r"^\[\s*\d+\.\d+\]\s*", "", ln) for ln in text.replace("\r", "").split("\n")]
    if start_marker is not None:
        at = next((i for i, ln in enumerate(lines) if start_marker in ln), None)
        lines = lines[at:] if at is not None else lines
    firsts = [i for i, ln in enumerate(lines) if SPLAT.search(ln)]
    context = lines[firsts[0]:firsts[0] + 40] if firsts else []
    return [lines[i].strip()[:300] for i in firsts], context


def run_variant(kernel: GuestKernel, initramfs: Path, helper: tuple[Path, Path],
                variant: str, module: Path, instrumented: str, config: RaceConfig,
                cmdline: str, results_dir: Path, kcsan_params: dict[str, str] | None = None,
                whole_reports: bool = False) -> VariantRun:
    """One boot: load `module`, churn, read what the kernel said. kcsan_params: KCSAN's run-time
    parameters for the churn; whole_reports (debug kernels): splats, the first report and
    `reproduced` from the whole reports (guest.reports), boot's never the variant's."""
    out = (results_dir / variant).resolve()
    shutil.rmtree(out, ignore_errors=True)
    config_path = share.stage(out, GUEST_FILES, helper, {variant: module}, {
        "variant": variant, "release": kernel.release, "modules_root": str(kernel.modules_root),
        "port": PORT, "seconds": config.seconds, "attempts": config.attempts,
        "kcsan_params": kcsan_params or {},
    })
    script = share.guest_script("guest_race.py", config_path)
    result = VariantRun(variant=variant, module=str(module), instrumented=instrumented)
    console = out / "console.log"
    try:
        run = machine.run_script(kernel, initramfs, out, script, timeout_s=config.timeout_s,
                           memory_mb=config.memory_mb, smp=config.smp,
                           cmdline_extra=cmdline)
        result.outcome, result.boot_s = "finished", run.boot_s
    except VmError as exc:
        text = console.read_text(errors="replace") if console.is_file() else ""
        result.outcome = ("panicked" if "Kernel panic" in text else
                          "timed out" if "timed out" in str(exc) else "failed")
        result.error = exc.one_line()[:500]
    guest = _guest_result(out)
    for key in ("seconds", "handshakes", "declined", "prfx_match_calls", "returns"):
        if key in guest:
            setattr(result, key, guest[key])
    result.attempts = int(guest.get("churn_cycles", 0))
    if guest.get("ok") is False and not result.error:
        result.outcome, result.error = "failed", str(guest.get("error", ""))[:500]
    result.kcsan_params = {str(k): str(v) for k, v in dict(guest.get("kcsan_params", {})).items()}
    result.kcsan_counters = {str(k): int(v)
                             for k, v in dict(guest.get("kcsan_counters", {})).items()}
    console_text = console.read_text(errors="replace") if console.is_file() else ""
    dmesg = str(guest.get("dmesg", ""))  # when the guest lived to read it
    # a guest that died: its dmesg (if any) and the console's last words, each once
    text = (dmesg or console_text if result.outcome == "finished" or not dmesg
            else dmesg + "\n" + console_text)
    marker = f"smcpatch-race: {variant} start"
    found = reports.split_reports(text, marker)
    during = [r for r in found if r.during == "race"]
    result.reports = [g.to_json() for g in reports.group(during)]
    result.boot_reports = [r.title for r in found if r.during == "boot"]
    if whole_reports:
        result.splats = [r.title for r in during]
        result.splat_context = during[0].lines[:40] if during else []
        result.reproduced = reports.reproduced(found)
        return result
    result.splats, result.splat_context = read_splats(text, marker)
    result.reproduced = bool(result.splats) and any(SMC_PATH.search(ln)
                                                    for ln in result.splat_context)
    return result


def _guest_result(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / "race-result.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def check_config(config: RaceConfig) -> None:
    if config.seconds <= 0 or config.seconds > 3600:
        raise BadInput("--seconds must be between 0 and 3600")
    if config.attempts < 0:
        raise BadInput("--attempts must be 0 (as many as time allows) or more")


# -- what a debug kernel's checker saw, in words --------------------------------------------------
# what printed a report, in the words of the finding (guest.reports' kinds)
KIND_NAMES = {"kcsan": "KCSAN", "kasan": "KASAN", "lockdep": "lockdep",
              "rcu": "lockdep (suspicious RCU usage)", "atomic-sleep": "DEBUG_ATOMIC_SLEEP",
              "warn": "a WARN"}


def finding(run: VariantRun, checker: str, config: KernelConfig, widened: bool) -> str:
    """One paragraph on the run: what the checker reported in smc_clc_prfx_match and elsewhere,
    or, when it reported nothing there, the figures of what it watched and why that can be
    (never a result that was not seen)."""
    groups = run.reports
    cve = [g for g in groups if g["scope"] == "cve-function"]
    other = [g for g in groups if g["scope"] == "other-smc"]
    kernel = [g for g in groups if g["scope"] == "kernel"]
    enodev = run.returns.get("-19", 0)
    load = (f"{run.seconds:.0f} s of churn: {run.attempts} churn cycles, "
            f"{run.prfx_match_calls} smc_clc_prfx_match calls, {enodev} of them found the "
            "device gone (-ENODEV)")
    parts = []
    if run.variant == "canary":
        parts.append(_canary_sentence(run, load))
    if run.outcome != "finished":
        parts.append(f"The run did not finish ({run.outcome}): what follows is what the kernel "
                     "said before it ended.")
    if cve:
        count = sum(g["count"] for g in cve)
        two = sum(g["two_sided"] for g in cve)
        who = ", ".join(dict.fromkeys(KIND_NAMES.get(g["kind"], g["kind"]) for g in cve))
        sides = (f" ({two} naming both accesses, {sum(g['unknown_origin'] for g in cve)} of "
                 "unknown origin)" if any(g["kind"] == "kcsan" for g in cve) else "")
        parts.append(f"{who} printed {count} report{'s' if count != 1 else ''} in "
                     f"smc_clc_prfx_match{sides} in {load}.")
        if run.kcsan_counters:
            parts.append(f"KCSAN set up {run.kcsan_counters.get('setup_watchpoints', 0)} "
                         f"watchpoints and counted {run.kcsan_counters.get('data_races', 0)} "
                         "data races (a race seen again within "
                         f"{config.get('CONFIG_KCSAN_REPORT_ONCE_IN_MS') or '3000'} ms is "
                         "counted, not printed).")
    elif checker == "kcsan":
        parts.append(_kcsan_silence(run, config, widened, load))
    else:
        parts.append(f"No KASAN, lockdep, RCU-usage or atomic-sleep report in "
                     f"smc_clc_prfx_match in {load}."
                     + (" For the vulnerable code this is the expected result: it dereferences "
                        "the device only inside its RCU read-side section (the read outside it "
                        "only tests the pointer), so there is no freed memory for KASAN to "
                        "touch (docs/race.md)." if run.variant == "before" else ""))
    if other:
        parts.append("Not explained by the fix (SMC code it does not change): "
                     + "; ".join(f"{g['count']} x {g['title']}" for g in other) + ".")
    if kernel:
        parts.append("Outside SMC: " + "; ".join(f"{g['count']} x {g['title']}"
                                                 for g in kernel) + ".")
    if run.boot_reports:
        parts.append(f"{len(run.boot_reports)} report(s) came before the race started (boot, "
                     "set-up, module load) and are not attributed to this variant: "
                     + "; ".join(run.boot_reports[:3]) + " (a report taints the kernel: "
                     "lockdep stops at the first one).")
    return " ".join(parts)


def _canary_sentence(run: VariantRun, load: str) -> str:
    """The canary (our fix with its RCU lock moved: not a fix) proves the checker is live."""
    if run.reproduced:
        return ("The RCU canary (our fix with rcu_read_lock() moved after the device read, "
                "NOT A FIX) was reported in smc_clc_prfx_match: lockdep's RCU check is live in "
                "this kernel, so its silence about the fixed module counts.")
    return ("The RCU canary (our fix with rcu_read_lock() moved after the device read, NOT A "
            f"FIX) was NOT reported in smc_clc_prfx_match in {load}: this kernel's silence about "
            "the two real variants proves nothing.")


def _kcsan_silence(run: VariantRun, config: KernelConfig, widened: bool, load: str) -> str:
    """Why KCSAN may print nothing in smc_clc_prfx_match, with this run's figures."""
    counters = run.kcsan_counters
    skip = config.get("CONFIG_KCSAN_SKIP_WATCH") or "4000"
    delay = run.kcsan_params.get("udelay_task") or config.get("CONFIG_KCSAN_UDELAY_TASK") or "80"
    watched = (f"KCSAN set up {counters.get('setup_watchpoints', 0)} watchpoints and counted "
               f"{counters.get('data_races', 0)} data races and "
               f"{counters.get('races_unknown_origin', 0)} races of unknown origin")
    text = f"KCSAN printed no report in smc_clc_prfx_match in {load}. {watched}"
    if run.variant == "after":
        return (text + ". The fixed function reads the device once, with dst_dev_rcu() (a "
                "marked load KCSAN does not watch), inside its RCU read-side section.")
    why = (f". KCSAN watches one sampled access in about {skip} for up to {delay} us, and the "
           "kernel's own check sites (slab frees, the scheduler, RCU) share that sampling, so "
           "the two plain loads of dst->dev are rarely watched at the moment dst_dev_put() "
           "swaps the device (measured: 0.14% of watchpoints, one report in 11 unwidened "
           "minute-long runs). Not seen is not absent")
    if widened:
        return (text + f". The widening re-read dst->dev for 20 ms per call, with watches of up "
                f"to {delay} us, but no swap landed inside a watch in this run" +
                (f" (the device did go during {enodev} calls)" if (enodev := run.returns.get(
                    "-19", 0)) else "") + ". Not seen is not absent.")
    return text + why + ": --widen re-reads dst->dev for 20 ms so the watchpoints land on it."
