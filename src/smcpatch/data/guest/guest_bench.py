"""SMC handshake benchmark, guest side: runs inside the QEMU guest as root.

Invoked by the host (src/smcpatch/benchmark.py) as `python3 guest_bench.py CONFIG.json`; the config
and every output live in the writable 9p share. Steps:

1. set-up: loopback up, kmod pointed at the unpacked module tree, Soft-RoCE (rxe0 on lo), cgroup2 +
   the sock_ops program that puts the SMC option into the SYN of clcv1 connections, tracefs;
2. validation pass per variant (not timed): kprobe/kretprobe on smc_clc_prfx_match count the calls
   per mode (clcv1: exactly one per connection, smcr/tcp: none) and time each call (synthetic
   event fed by a hist trigger, ns);
3. timed rounds: per round and variant (order alternates), rmmod -> insmod -> re-add the UEID, then
   per mode a server and `connections_per_run` timed connections from the C helper via ctypes;
   every run is proven from the SMC statistics (generic netlink): smcr = SMC-R successes only,
   clcv1 = server fallbacks with decline NOSMCDEV only, tcp = no SMC activity;
4. results: one pyperf Run per round, written as pyperf JSON per mode and variant, plus
   guest-result.json (proofs, validation, timings) for the host.

A failure writes guest-result.json with "error" and exits 1. pyperf's Runner spawns one Python
process per run; under TCG over 9p a Python start costs seconds, so this one process records
pyperf Runs directly (the timing loop itself is C: libsmcbench.so).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

T0 = time.monotonic()
UPTIME_AT_START = float(Path("/proc/uptime").read_text().split()[0])

MODES = {"smcr": 0, "clcv1": 1, "tcp": 2}
UEID = "SMCPATCH-BENCH".ljust(32)
DECLINE_NAMES = {
    0x01010000: "MEM", 0x02010000: "TIMEOUT_CL", 0x02020000: "TIMEOUT_AL",
    0x03000000: "CNFERR", 0x03010000: "PEERNOSMC", 0x03020000: "IPSEC",
    0x03030000: "NOSMCDEV", 0x03030001: "NOSMCDDEV", 0x03030002: "NOSMCRDEV",
    0x03030003: "NOISM2SUPP", 0x03030004: "NOV2EXT", 0x03030005: "NOV2DEXT",
    0x03030006: "NOSEID", 0x03030007: "NOSMCD2DEV", 0x03030008: "NOUEID",
    0x03030009: "RELEASEERR", 0x0303000A: "MAXCONNERR", 0x0303000B: "MAXLINKERR",
    0x03040000: "MODEUNSUPP", 0x03050000: "RMBE_EC", 0x03060000: "OPTUNSUPP",
    0x03070000: "DIFFPREFIX", 0x03080000: "GETVLANERR", 0x03090000: "ISMVLANERR",
    0x030A0000: "NOACTLINK", 0x030B0000: "NOSRVLINK", 0x030C0000: "VERSMISMAT",
    0x030D0000: "MAX_DMB", 0x030E0000: "NOROUTE", 0x030F0000: "NOINDIRECT",
    0x04000000: "SYNCERR", 0x05000000: "PEERDECL", 0x09990000: "INTERR",
    0x09990001: "ERR_RTOK", 0x09990002: "ERR_RDYLNK", 0x09990003: "ERR_REGBUF",
}
NOSMCDEV = 0x03030000


class Fail(Exception):
    pass


def decline_name(code: int) -> str:
    return f"0x{code:08x} ({DECLINE_NAMES.get(code, 'unknown')})"


def log(msg: str) -> None:
    print(f"[guest {time.monotonic() - T0:7.2f}s] {msg}", flush=True)


def local_copy(path: str) -> str:
    """A copy of a file of the 9p share in the guest's tmpfs (TMPDIR=/run/smcb/tmp)."""
    dest = Path(os.environ.get("TMPDIR", "/run/smcb/tmp")) / "local" / Path(path).parent.name
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(path).name
    shutil.copy2(path, target)
    return str(target)


def run(*cmd: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise Fail(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def dmesg_tail(lines: int = 25) -> str:
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"(dmesg failed: {e})"
    return "\n".join(out.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# SMC generic netlink (pyroute2)


class SmcNetlink:
    GET_STATS, GET_FBACK_STATS, DUMP_UEID, ADD_UEID, FLUSH_UEID = 7, 8, 9, 10, 12

    def __init__(self) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg, nla
        from pyroute2.netlink.generic import GenericNetlinkSocket

        class smc_tech(nla):
            nla_map = (
                ("SMC_NLA_STATS_T_PAD", "none"),
                ("SMC_NLA_STATS_T_TX_RMB_SIZE", "hex"),
                ("SMC_NLA_STATS_T_RX_RMB_SIZE", "hex"),
                ("SMC_NLA_STATS_T_TXPLOAD_SIZE", "hex"),
                ("SMC_NLA_STATS_T_RXPLOAD_SIZE", "hex"),
                ("SMC_NLA_STATS_T_TX_RMB_STATS", "hex"),
                ("SMC_NLA_STATS_T_RX_RMB_STATS", "hex"),
                ("SMC_NLA_STATS_T_CLNT_V1_SUCC", "uint64"),
                ("SMC_NLA_STATS_T_CLNT_V2_SUCC", "uint64"),
                ("SMC_NLA_STATS_T_SRV_V1_SUCC", "uint64"),
                ("SMC_NLA_STATS_T_SRV_V2_SUCC", "uint64"),
            )

        class smc_stats(nla):
            nla_map = (
                ("SMC_NLA_STATS_PAD", "none"),
                ("SMC_NLA_STATS_SMCD_TECH", "tech"),
                ("SMC_NLA_STATS_SMCR_TECH", "tech"),
                ("SMC_NLA_STATS_CLNT_HS_ERR_CNT", "uint64"),
                ("SMC_NLA_STATS_SRV_HS_ERR_CNT", "uint64"),
            )
            tech = smc_tech

        class smc_fback(nla):
            nla_map = (
                ("SMC_NLA_FBACK_STATS_PAD", "none"),
                ("SMC_NLA_FBACK_STATS_TYPE", "uint8"),
                ("SMC_NLA_FBACK_STATS_SRV_CNT", "uint64"),
                ("SMC_NLA_FBACK_STATS_CLNT_CNT", "uint64"),
                ("SMC_NLA_FBACK_STATS_RSN_CODE", "uint32"),
                ("SMC_NLA_FBACK_STATS_RSN_CNT", "uint16"),
            )

        class smc_msg(genlmsg):
            nla_map = (
                ("SMC_GEN_UNSPEC", "none"),
                ("SMC_GEN_SYS_INFO", "hex"),
                ("SMC_GEN_LGR_SMCR", "hex"),
                ("SMC_GEN_LINK_SMCR", "hex"),
                ("SMC_GEN_LGR_SMCD", "hex"),
                ("SMC_GEN_DEV_SMCD", "hex"),
                ("SMC_GEN_DEV_SMCR", "hex"),
                ("SMC_GEN_STATS", "stats"),
                ("SMC_GEN_FBACK_STATS", "fback"),
            )
            stats = smc_stats
            fback = smc_fback

        class smc_ueid_msg(genlmsg):
            nla_map = (
                ("SMC_NLA_EID_TABLE_UNSPEC", "none"),
                ("SMC_NLA_EID_TABLE_ENTRY", "asciiz"),
            )

        self._msg, self._ueid_msg = smc_msg, smc_ueid_msg
        self._dump = NLM_F_REQUEST | NLM_F_DUMP
        self._ack = NLM_F_REQUEST | NLM_F_ACK
        self.sock = GenericNetlinkSocket()
        self.sock.bind("SMC_GEN_NETLINK", smc_msg)

    def rebind(self) -> None:
        """The family id changes when smc.ko is reloaded."""
        self.sock.close()
        self.__init__()  # type: ignore[misc]

    def _request(self, msg: object, cmd: int, flags: int) -> list[object]:
        msg["cmd"] = cmd  # type: ignore[index]
        msg["version"] = 1  # type: ignore[index]
        return list(self.sock.nlm_request(msg, msg_type=self.sock.prid, msg_flags=flags))

    def add_ueid(self, ueid: str) -> None:
        m = self._ueid_msg()
        m["attrs"] = [("SMC_NLA_EID_TABLE_ENTRY", ueid)]
        self._request(m, self.ADD_UEID, self._ack)

    def ueids(self) -> list[str]:
        out = []
        for r in self._request(self._ueid_msg(), self.DUMP_UEID, self._dump):
            # replies are parsed with the bound class, where attribute 1 is "SYS_INFO" (hex)
            v = r.get_attr("SMC_GEN_SYS_INFO")  # type: ignore[attr-defined]
            if v:
                out.append(bytes.fromhex(v.replace(":", "")).rstrip(b"\0").decode())
        return out

    def stats(self) -> dict[str, int]:
        """Flat counters: smcr/smcd successes, handshake errors, fallbacks and reasons."""
        out: dict[str, int] = {}
        for r in self._request(self._msg(), self.GET_STATS, self._dump):
            st = r.get_attr("SMC_GEN_STATS")  # type: ignore[attr-defined]
            if st is None:
                continue
            for tech in ("smcr", "smcd"):
                key = f"SMC_NLA_STATS_{tech.upper()}_TECH"
                t = st.get_attr(key)
                if t is None:
                    continue
                for f in ("CLNT_V1_SUCC", "CLNT_V2_SUCC", "SRV_V1_SUCC", "SRV_V2_SUCC"):
                    out[f"{tech}_{f.lower()}"] = t.get_attr(f"SMC_NLA_STATS_T_{f}") or 0
            out["clnt_hs_err"] = st.get_attr("SMC_NLA_STATS_CLNT_HS_ERR_CNT") or 0
            out["srv_hs_err"] = st.get_attr("SMC_NLA_STATS_SRV_HS_ERR_CNT") or 0
        out.setdefault("srv_fback", 0)
        out.setdefault("clnt_fback", 0)
        for r in self._request(self._msg(), self.GET_FBACK_STATS, self._dump):
            fb = r.get_attr("SMC_GEN_FBACK_STATS")  # type: ignore[attr-defined]
            if fb is None:
                continue
            srv_cnt = fb.get_attr("SMC_NLA_FBACK_STATS_SRV_CNT")
            if srv_cnt is not None:
                out["srv_fback"] = srv_cnt
                out["clnt_fback"] = fb.get_attr("SMC_NLA_FBACK_STATS_CLNT_CNT") or 0
            side = "srv" if fb.get_attr("SMC_NLA_FBACK_STATS_TYPE") else "clnt"
            code = fb.get_attr("SMC_NLA_FBACK_STATS_RSN_CODE")
            if code:
                out[f"{side}_rsn_{code:08x}"] = fb.get_attr("SMC_NLA_FBACK_STATS_RSN_CNT") or 0
        return out


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    d = {}
    for k in set(before) | set(after):
        v = after.get(k, 0) - before.get(k, 0)
        if "_rsn_" in k:
            v %= 1 << 16  # RSN_CNT is a u16
        if v:
            d[k] = v
    return d


def reasons(delta: dict[str, int]) -> str:
    parts = [
        f"{k.split('_')[0]} {decline_name(int(k.rsplit('_', 1)[1], 16))} x{v}"
        for k, v in sorted(delta.items())
        if "_rsn_" in k
    ]
    return ", ".join(parts) or "no reason recorded"


def prove(mode: str, n: int, delta: dict[str, int]) -> dict[str, object]:
    """The kernel's own counters must show that each of the n connections took `mode`'s path."""
    succ = {k: v for k, v in delta.items() if k.endswith("_succ")}
    fb = delta.get("srv_fback", 0) + delta.get("clnt_fback", 0)
    if mode == "smcr":
        ok = (delta.get("smcr_srv_v2_succ", 0) + delta.get("smcr_srv_v1_succ", 0) == n
              and delta.get("smcr_clnt_v2_succ", 0) + delta.get("smcr_clnt_v1_succ", 0) == n
              and fb == 0)
        if not ok:
            raise Fail(
                f"smcr: {n} connections but SMC-R successes {succ} and {fb} fallbacks: "
                f"not SMC-R (fallback reasons: {reasons(delta)}); refusing to report TCP as SMC-R"
            )
    elif mode == "clcv1":
        nosmc = delta.get(f"srv_rsn_{NOSMCDEV:08x}", 0)
        ok = delta.get("srv_fback", 0) == n and nosmc == n % (1 << 16) and not succ \
            and delta.get("clnt_fback", 0) == 0
        if not ok:
            raise Fail(
                f"clcv1: {n} connections but server fallbacks {delta.get('srv_fback', 0)}, "
                f"NOSMCDEV declines {nosmc}, successes {succ}: the v1 CLC path was not taken "
                f"as intended (reasons: {reasons(delta)})"
            )
    else:
        if succ or fb:
            raise Fail(f"tcp: SMC counters moved during the TCP baseline: {delta}")
    return {"connections": n, "delta": delta}


# ---------------------------------------------------------------------------------------------
# set-up, modules

SYS_INIT_MODULE, SYS_FINIT_MODULE, SYS_DELETE_MODULE = 175, 313, 176  # x86_64
MODULE_INIT_COMPRESSED_FILE = 4  # the kernel decompresses .ko.xz itself (MODULE_DECOMPRESS)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def finit_module(path: str, what: str) -> None:
    flags = MODULE_INIT_COMPRESSED_FILE if path.endswith((".xz", ".zst", ".gz")) else 0
    fd = os.open(path, os.O_RDONLY)
    try:
        rc = _libc.syscall(SYS_FINIT_MODULE, fd, b"", flags)
        err = ctypes.get_errno()
    finally:
        os.close(fd)
    if rc != 0 and flags and err in (errno.EINVAL, errno.EOPNOTSUPP) and path.endswith(".xz"):
        import lzma  # a kernel without in-kernel decompression: hand it the plain image

        image = lzma.decompress(Path(path).read_bytes())
        rc = _libc.syscall(SYS_INIT_MODULE, image, ctypes.c_ulong(len(image)), b"")
        err = ctypes.get_errno()
    if rc != 0:
        raise Fail(f"insmod {path} ({what}) failed: {os.strerror(err)}\n"
                   f"dmesg tail:\n{dmesg_tail()}")


def delete_module(name: str) -> None:
    for _attempt in range(100):
        if _libc.syscall(SYS_DELETE_MODULE, name.encode(), os.O_NONBLOCK) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EBUSY, errno.EAGAIN):
            break
        time.sleep(0.1)  # sockets and link groups are still being torn down
    raise Fail(f"rmmod {name} failed: {os.strerror(err)}\ndmesg tail:\n{dmesg_tail()}")


class Guest:
    def __init__(self, cfg: dict) -> None:  # type: ignore[type-arg]
        self.cfg = cfg
        self.out = Path(cfg["results_dir"])
        # the helper, its library and the modules run from the guest's own tmpfs: pages faulted
        # in from the 9p share mid-measurement make the guest wait on a (busy) host, and under
        # -icount sleep=off an idle guest's clock jumps to its next timer meanwhile
        self.helper = local_copy(cfg["helper"])
        self.lib = ctypes.CDLL(local_copy(cfg["helper_lib"]))
        cfg["modules"] = {v: local_copy(p) for v, p in cfg["modules"].items()}
        self.lib.smcb_run.restype = ctypes.c_int64
        self.lib.smcb_run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                      ctypes.c_char_p, ctypes.c_int]
        self.ports = {m: int(cfg["base_port"]) + i for i, m in enumerate(MODES)}
        self.nl: SmcNetlink | None = None
        self.loaded: str | None = None
        self.timings: dict[str, object] = {}

    def setup(self) -> None:
        t = time.monotonic()
        run("ip", "link", "set", "lo", "up")
        root = self.cfg["modules_root"]
        wrapper = Path("/run/smcb/modprobe")
        wrapper.write_text(f'#!/bin/sh\nexec /usr/sbin/modprobe -d "{root}" "$@"\n')
        wrapper.chmod(0o755)
        # init.sh pointed /proc/sys/kernel/modprobe at a hop into this wrapper
        self.modprobe("rdma_rxe")
        self.modprobe("ib_core")
        # loads rdma_rxe, ib_core and their crc32 modules on demand: slow under TCG on a busy host
        run("rdma", "link", "add", "rxe0", "type", "rxe", "netdev", "lo", timeout=300)
        log("rxe0 on lo")
        os.makedirs("/sys/fs/cgroup", exist_ok=True)
        run("mount", "-t", "cgroup2", "none", "/sys/fs/cgroup")
        out = run(self.helper, "attach-synopt", "/sys/fs/cgroup", str(self.ports["clcv1"]))
        if "attached" not in out:
            raise Fail(f"sock_ops program not attached: {out}")
        if not Path("/sys/kernel/tracing/kprobe_events").exists():
            run("mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing")
        self.timings["setup_s"] = time.monotonic() - t

    def modprobe(self, name: str) -> None:
        proc = subprocess.run(["/run/smcb/modprobe", name], capture_output=True, text=True)
        if proc.returncode:
            raise Fail(f"modprobe {name} failed: {proc.stderr.strip()}\ndmesg:\n{dmesg_tail()}")

    def load(self, variant: str) -> None:
        """rmmod -> insmod -> re-add the UEID (module syscalls directly: no kmod process)."""
        t = time.monotonic()
        ko = self.cfg["modules"][variant]
        if self.nl is not None:
            self.nl.sock.close()
            self.nl = None
        for mod in ("smc_diag", "smc"):
            if Path(f"/sys/module/{mod}").exists():
                delete_module(mod)
        t1 = time.monotonic()
        finit_module(ko, variant)
        t2 = time.monotonic()
        log(f"insmod {variant}")
        self.nl = SmcNetlink()
        self.nl.add_ueid(UEID)
        if UEID.rstrip() not in [u.rstrip() for u in self.nl.ueids()]:
            raise Fail("the UEID was not added")
        self.loaded = variant
        t3 = time.monotonic()
        for key, v in (("rmmod_s", t1 - t), ("insmod_s", t2 - t1), ("ueid_s", t3 - t2)):
            self.timings.setdefault(key, []).append(round(v, 4))  # type: ignore[attr-defined]

    # -- servers and clients

    def start_server(self, mode: str) -> subprocess.Popen[str]:
        srv = subprocess.Popen([self.helper, "serve", mode, str(self.ports[mode])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = srv.stdout.readline() if srv.stdout else ""
        if line.strip() != "ready":
            srv.kill()
            err = srv.stderr.read() if srv.stderr else ""
            raise Fail(f"{mode} server did not start: {line}{err}")
        return srv

    @staticmethod
    def stop_server(srv: subprocess.Popen[str]) -> tuple[int, int]:
        srv.terminate()
        try:
            out, err = srv.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()
            out, err = srv.communicate()
            raise Fail(f"the server did not stop within 60 s of SIGTERM (killed): {out} {err}\n"
                       f"dmesg tail:\n{dmesg_tail(15)}") from None
        m = re.search(r"served (\d+) failed (\d+)", out)
        if not m:
            raise Fail(f"server gave no count: {out} {err}")
        return int(m.group(1)), int(m.group(2))

    def client(self, mode: str, loops: int) -> float:
        err = ctypes.create_string_buffer(256)
        ns = self.lib.smcb_run(MODES[mode], self.ports[mode], loops, err, 256)
        if ns < 0:
            raise Fail(f"{mode} client ({self.loaded}): {err.value.decode(errors='replace')}\n"
                       f"dmesg tail:\n{dmesg_tail(10)}")
        return ns / 1e9

    def proven_block(self, mode: str, fn):  # type: ignore[no-untyped-def]
        """Run fn() between a server start/stop and two stats snapshots; prove the path."""
        assert self.nl is not None
        srv = self.start_server(mode)
        before = self.nl.stats()
        try:
            result, expected = fn()
        except BaseException as exc:  # the client's error is what went wrong: keep it
            try:
                self.stop_server(srv)
            except Fail as stop:
                raise Fail(f"{exc}; then: {stop}") from exc
            raise
        served, failed = self.stop_server(srv)
        delta = stats_delta(before, self.nl.stats())
        if served != expected or failed:
            raise Fail(f"{mode}: client made {expected} connections, server served {served} "
                       f"(failed {failed})")
        return result, prove(mode, expected, delta)

    # -- validation pass

    def validate(self, variant: str, n: int) -> dict[str, object]:
        tr = Path("/sys/kernel/tracing")

        def w(path: str, text: str, append: bool = True) -> None:
            # os.open: Python's "a" mode seeks to the end, which tracefs files reject
            flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
            try:
                fd = os.open(tr / path, flags)
                try:
                    os.write(fd, (text + "\n").encode())
                finally:
                    os.close(fd)
            except OSError as e:
                errlog = (tr / "error_log").read_text().strip()[-600:]
                raise Fail(f"tracefs: writing {text!r} to {path}: {e}\n{errlog}") from e

        start = "hist:keys=common_pid:ts0=common_timestamp"
        end = ("hist:keys=common_pid:lat=common_timestamp-$ts0:"
               "onmatch(kprobes.smcb_prfx).trace(smcb_prfx_lat,$lat)")
        w("trace", "", append=False)
        w("kprobe_events", "p:smcb_prfx smc_clc_prfx_match")
        w("kprobe_events", "r:smcb_prfx_ret smc_clc_prfx_match ret=$retval:s32")
        w("synthetic_events", "smcb_prfx_lat u64 lat")
        w("events/kprobes/smcb_prfx/trigger", start)
        w("events/kprobes/smcb_prfx_ret/trigger", end)
        for ev in ("kprobes/smcb_prfx", "kprobes/smcb_prfx_ret", "synthetic/smcb_prfx_lat"):
            w(f"events/{ev}/enable", "1", append=False)
        out: dict[str, object] = {}
        try:
            for mode in self.cfg["modes"]:
                w("trace", "", append=False)

                def go(mode: str = mode) -> tuple[None, int]:
                    self.client(mode, n)
                    return None, n

                self.proven_block(mode, go)
                text = (tr / "trace").read_text()
                calls = len(re.findall(r" smcb_prfx: ", text))
                rets = re.findall(r" smcb_prfx_ret: .*ret=(-?\d+)", text)
                lats = [int(x) for x in re.findall(r" smcb_prfx_lat: lat=(\d+)", text)]
                want = n if mode == "clcv1" else 0
                if calls != want or len(rets) != want:
                    raise Fail(f"validation ({variant}, {mode}): {calls} calls / {len(rets)} "
                               f"returns of smc_clc_prfx_match for {n} connections, want {want}")
                if mode == "clcv1" and any(int(r) != 0 for r in rets):
                    raise Fail(f"validation ({variant}): smc_clc_prfx_match returned "
                               f"{sorted(set(rets))}, want 0 (prefix match)")
                out[mode] = {"connections": n, "calls": calls, "returns": len(rets),
                             "durations_ns": lats}
                log(f"validate {variant} {mode}: {calls} calls for {n} connections"
                    + (f", median {sorted(lats)[len(lats) // 2]} ns" if lats else ""))
        finally:
            for ev in ("kprobes/smcb_prfx", "kprobes/smcb_prfx_ret", "synthetic/smcb_prfx_lat"):
                w(f"events/{ev}/enable", "0", append=False)
            w("events/kprobes/smcb_prfx_ret/trigger", "!" + end)
            w("events/kprobes/smcb_prfx/trigger", "!" + start)
            w("synthetic_events", "!smcb_prfx_lat u64 lat")
            w("kprobe_events", "-:smcb_prfx_ret")
            w("kprobe_events", "-:smcb_prfx")
        return out

    # -- timed runs

    def timed_run(self, mode: str, round_no: int) -> tuple[list[float], list[float], dict]:  # type: ignore[type-arg]
        c = self.cfg
        loops, nvals, nwarm = c["loops"], c["values_per_run"], c["warmups"]

        def go() -> tuple[tuple[list[float], list[float]], int]:
            warm = [self.client(mode, loops) / loops for _ in range(nwarm)]
            vals = [self.client(mode, loops) / loops for _ in range(nvals)]
            return (warm, vals), loops * (nwarm + nvals)

        (warm, vals), proof = self.proven_block(mode, go)
        return warm, vals, proof


def write_pyperf(out: Path, runs: dict[tuple[str, str], list], cfg: dict) -> list[str]:  # type: ignore[type-arg]
    import pyperf

    files = []
    suites: dict[str, list[pyperf.Benchmark]] = {}
    for (mode, variant), rlist in runs.items():
        pruns = []
        for r in rlist:
            md = {"name": mode, "loops": cfg["loops"], "unit": "second",
                  "description": f"SMC handshake latency, mode {mode}, {variant} module",
                  "smcpatch_variant": variant, "smcpatch_round": r["round"],
                  "kernel_release": cfg["release"]}
            pruns.append(pyperf.Run(r["values"], warmups=[(cfg["loops"], w) for w in r["warmups"]],
                                    metadata=md, collect_metadata=False))
        bench = pyperf.Benchmark(pruns)
        path = out / f"{mode}-{variant}.json"
        bench.dump(str(path), replace=True)
        files.append(path.name)
        suites.setdefault(variant, []).append(bench)
    for variant, benches in suites.items():
        suite = pyperf.BenchmarkSuite(benches)
        suite.dump(str(out / f"{variant}.json"), replace=True)
        files.append(f"{variant}.json")
    return files


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    out = Path(cfg["results_dir"])
    result: dict[str, object] = {"boot_uptime_s": UPTIME_AT_START, "release": os.uname().release}
    try:
        if os.uname().release != cfg["release"]:
            raise Fail(f"guest runs {os.uname().release}, expected {cfg['release']}")
        g = Guest(cfg)
        log("set-up")
        g.setup()
        variants = list(cfg["modules"])
        if cfg.get("validate", True):
            t = time.monotonic()
            result["validation"] = {}
            for v in variants:
                g.load(v)
                result["validation"][v] = g.validate(v, cfg["validate_connections"])  # type: ignore[index]
            g.timings["validation_s"] = time.monotonic() - t
        runs: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
        proofs = []
        t = time.monotonic()
        for rnd in range(cfg["runs"]):
            order = variants if rnd % 2 == 0 else variants[::-1]
            for v in order:
                g.load(v)
                for mode in cfg["modes"]:
                    warm, vals, proof = g.timed_run(mode, rnd)
                    runs.setdefault((mode, v), []).append(
                        {"round": rnd, "warmups": warm, "values": vals})
                    proofs.append({"round": rnd, "variant": v, "mode": mode, **proof})
                    log(f"round {rnd} {v:7s} {mode:6s} median "
                        f"{sorted(vals)[len(vals) // 2] * 1e6:9.1f} us/conn "
                        f"({proof['connections']} connections proven)")
        g.timings["timed_s"] = time.monotonic() - t
        t = time.monotonic()
        result["pyperf_files"] = write_pyperf(out, runs, cfg)
        g.timings["pyperf_write_s"] = time.monotonic() - t
        result["proofs"] = proofs
        result["timings"] = g.timings
        result["ok"] = True
        rc = 0
    except Exception as e:  # noqa: BLE001 - reported to the host, which raises VmError
        result["ok"] = False
        result["error"] = str(e) if isinstance(e, Fail) else traceback.format_exc()
        log(f"FAILED: {result['error']}")
        rc = 1
    result["guest_total_s"] = time.monotonic() - T0
    tmp = out / "guest-result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.rename(out / "guest-result.json")
    return rc


if __name__ == "__main__":
    sys.exit(main())
