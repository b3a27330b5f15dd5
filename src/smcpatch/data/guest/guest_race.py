"""The race under device churn, guest side: runs inside the QEMU guest as root (see
src/smcpatch/features/race.py).

One module variant per boot. A veth pair joins the root namespace (client, 10.77.0.2) and a
namespace `srv` (the AF_SMC server, 10.77.0.1): the server's accepted sockets route through
veth0, so smc_clc_prfx_match() reads the device of a dst that goes away when veth0 is deleted.
The C client (libsmcbench.so, smcb_race) makes clcv1 handshakes (SYN with the SMC option, a
hand-made SMC-R v1 proposal) for the configured time while a churn loop deletes and recreates
the pair, its addresses and routes. A kprobe counts the calls of smc_clc_prfx_match. Whatever
the kernel says (oops, KFENCE, poison, stalls, WARN; on a debug kernel KCSAN, KASAN, lockdep) is
read from dmesg afterwards; a kernel that panics ends the guest, and the host reads the console.

On a KCSAN kernel the host's `kcsan_params` (kcsan.udelay_task=2000) are written to
/sys/module/kcsan/parameters just before the churn and put back after it, so boot, set-up and
module load run with KCSAN's defaults; KCSAN's debugfs counters are read before and after the
churn and their difference reported (`kcsan_counters`: watchpoints set up, data races, ...).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guest_bench import Fail, Guest, log, run  # noqa: E402  (the bench's set-up and loading)

SERVER, CLIENT, PREFIX = "10.77.0.1", "10.77.0.2", 24
KCSAN_PARAMS = Path("/sys/module/kcsan/parameters")
KCSAN_DEBUGFS = Path("/sys/kernel/debug/kcsan")


def kmsg(text: str) -> None:
    """A marker in the kernel log, so the console shows which phase a splat came in."""
    try:
        with open("/dev/kmsg", "w") as handle:
            handle.write(f"smcpatch-race: {text}\n")
    except OSError:
        pass


def ip(*args: str, check: bool = True) -> None:
    run("ip", *args, check=check, timeout=60)


def make_link() -> None:
    ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
    ip("link", "set", "veth0", "netns", "srv")
    ip("-n", "srv", "addr", "add", f"{SERVER}/{PREFIX}", "dev", "veth0")
    ip("-n", "srv", "link", "set", "veth0", "up")
    ip("addr", "add", f"{CLIENT}/{PREFIX}", "dev", "veth1")
    ip("link", "set", "veth1", "up")


def delete_link() -> None:
    ip("-n", "srv", "link", "del", "veth0", check=False)  # takes veth1 with it


def churn(stop: threading.Event, cycles: list[int], max_cycles: int) -> None:
    """Delete and recreate the pair (its routes go and come with it) until told to stop."""
    while not stop.is_set() and (not max_cycles or cycles[0] < max_cycles):
        time.sleep(random.uniform(0.0, 0.2))  # let some handshakes start on the new link
        delete_link()
        cycles[0] += 1
        time.sleep(random.uniform(0.0, 0.05))
        make_link()


def kcsan_counters() -> dict[str, int]:
    """KCSAN's debugfs counters (used_watchpoints, setup_watchpoints, data_races, ...); empty
    on a kernel without KCSAN."""
    if not KCSAN_PARAMS.parent.exists():
        return {}
    if not KCSAN_DEBUGFS.exists():
        run("mount", "-t", "debugfs", "none", "/sys/kernel/debug", check=False)
    try:
        text = KCSAN_DEBUGFS.read_text()
    except OSError:
        return {}
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+): (-?\d+)$", text, re.M) if m.group(1) != "enabled"}


def kcsan_set(params: dict[str, str]) -> dict[str, str]:
    """Write kcsan.<name> at run time (0644 module parameters); the values they replace."""
    old: dict[str, str] = {}
    for name, value in params.items():
        path = KCSAN_PARAMS / name
        old[name] = path.read_text().strip()
        path.write_text(f"{value}\n")
    return old


def kprobe_hits() -> int:
    for line in Path("/sys/kernel/tracing/kprobe_profile").read_text().splitlines():
        words = line.split()
        if words and words[0] == "race_prfx":
            return int(words[1])
    return 0


def return_values() -> dict[str, int]:
    """How smc_clc_prfx_match() returned: 0 (prefix matched), -2 (no match), -19 (no device:
    the dst's device was gone, blackhole_netdev in its place), -107 (no dst)."""
    counts: dict[str, int] = {}
    for value in re.findall(r"race_prfx_ret: .* ret=(-?\d+)",
                            Path("/sys/kernel/tracing/trace").read_text()):
        counts[value] = counts.get(value, 0) + 1
    return counts


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    out = Path(cfg["results_dir"])
    result: dict[str, object] = {"variant": cfg["variant"], "release": os.uname().release,
                                 "cmdline": Path("/proc/cmdline").read_text().strip()}
    try:
        guest = Guest({**cfg, "base_port": cfg["port"] - 1})  # ports: smcr, clcv1, tcp
        port = guest.ports["clcv1"]
        run("ip", "link", "set", "lo", "up")
        wrapper = Path("/run/smcb/modprobe")  # init.sh points the kernel's modprobe here
        wrapper.write_text(f'#!/bin/sh\nexec /usr/sbin/modprobe -d "{cfg["modules_root"]}" "$@"\n')
        wrapper.chmod(0o755)
        guest.modprobe("ib_core")  # smc.ko's dependency, from the kernel's own modules
        guest.modprobe("veth")
        os.makedirs("/sys/fs/cgroup", exist_ok=True)
        run("mount", "-t", "cgroup2", "none", "/sys/fs/cgroup")
        attached = run(guest.helper, "attach-synopt", "/sys/fs/cgroup", str(port))
        if "attached" not in attached:
            raise Fail(f"sock_ops program not attached: {attached}")
        if not Path("/sys/kernel/tracing/kprobe_events").exists():
            run("mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing")
        guest.load(cfg["variant"])
        # os.open: Python's "a" mode seeks to the end, which tracefs refuses
        fd = os.open("/sys/kernel/tracing/kprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"p:race_prfx smc_clc_prfx_match\n")
            os.write(fd, b"r:race_prfx_ret smc_clc_prfx_match ret=$retval:s32\n")
        finally:
            os.close(fd)
        for event in ("race_prfx", "race_prfx_ret"):
            Path(f"/sys/kernel/tracing/events/kprobes/{event}/enable").write_text("1\n")
        run("ip", "netns", "add", "srv")
        run("ip", "-n", "srv", "link", "set", "lo", "up")
        make_link()
        server = subprocess.Popen(["ip", "netns", "exec", "srv", guest.helper, "serve", "clcv1",
                                   str(port)], env={**os.environ, "SMCB_BIND": "0.0.0.0"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if (server.stdout.readline() if server.stdout else "").strip() != "ready":
            why = server.stderr.read() if server.stderr else ""
            raise Fail(f"race server did not start: {why}")
        lib = guest.lib
        lib.smcb_set_target(SERVER.encode(), PREFIX)
        lib.smcb_race.argtypes = [ctypes.c_int, ctypes.c_double, ctypes.POINTER(ctypes.c_int64)]
        counts = (ctypes.c_int64 * 3)()
        stop, cycles = threading.Event(), [0]
        churner = threading.Thread(target=churn, args=(stop, cycles, cfg["attempts"]))
        kcsan_params = dict(cfg.get("kcsan_params") or {})
        kcsan_before = kcsan_counters()
        kcsan_old = kcsan_set(kcsan_params)  # the churn only: set-up ran with the defaults
        try:
            kmsg(f"{cfg['variant']} start")
            started = time.monotonic()
            churner.start()
            client = threading.Thread(target=lib.smcb_race,
                                      args=(port, float(cfg["seconds"]), counts))
            client.start()
            while client.is_alive() and (churner.is_alive() or not cfg["attempts"]):
                client.join(0.5)
            lib.smcb_race_stop()
            client.join()
            stop.set()
            churner.join()
            seconds = time.monotonic() - started
            kmsg(f"{cfg['variant']} end")
        finally:
            kcsan_set(kcsan_old)
        kcsan_after = kcsan_counters()
        if kcsan_after:
            result["kcsan_params"] = kcsan_params
            result["kcsan_counters"] = {k: v - kcsan_before.get(k, 0)
                                        for k, v in kcsan_after.items()}
        server.terminate()
        served = server.communicate(timeout=60)[0].strip()
        time.sleep(1)  # the listen workers of the last handshakes finish
        for event in ("race_prfx", "race_prfx_ret"):  # counters frozen before they are read
            Path(f"/sys/kernel/tracing/events/kprobes/{event}/enable").write_text("0\n")
        result.update({"churn_cycles": cycles[0], "seconds": round(seconds, 1),
                       "handshakes": counts[0], "declined": counts[1], "failed": counts[2],
                       "prfx_match_calls": kprobe_hits(), "returns": return_values(),
                       "server": served, "ok": True})
        log(f"race {cfg['variant']}: {cycles[0]} churn cycles, {counts[0]} handshakes, "
            f"{result['prfx_match_calls']} smc_clc_prfx_match calls in {seconds:.0f} s")
        rc = 0
    except Exception as exc:  # noqa: BLE001 - reported to the host
        result.update({"ok": False, "error": str(exc)})
        log(f"FAILED: {exc}")
        rc = 1
    result["dmesg"] = subprocess.run(["dmesg"], capture_output=True, text=True).stdout[-200000:]
    tmp = out / "race-result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.rename(out / "race-result.json")
    return rc


if __name__ == "__main__":
    sys.exit(main())
