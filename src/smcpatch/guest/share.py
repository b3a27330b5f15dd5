"""What goes into a 9p guest's results share, staged in one place: the guest programs
(data/guest), the helper built from smcbench.c, the modules to load and the guest's config;
and the shell script init.sh runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import site
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import GUEST_DIR
from ..errors import BuildError
from ..plumbing import hostpkg, proc
from ..plumbing.cache import publish_dir

GUEST_SHARE = "/run/smcb/results"  # where init.sh mounts the share inside the guest


def build_helper(cache_dir: Path) -> tuple[Path, Path]:
    """gcc-build the guest helper (executable + ctypes library), cached by source hash."""
    hostpkg.ensure([hostpkg.Tool("gcc", "gcc"),
                    hostpkg.Tool("/usr/include/arpa/inet.h", "libc6-dev")], "guest helper")
    src = GUEST_DIR / "smcbench.c"
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    d = Path(cache_dir) / "helper" / key
    exe, lib = d / "smcbench", d / "libsmcbench.so"
    if exe.is_file() and lib.is_file():
        return exe, lib
    with publish_dir(d) as tmp:
        for cmd in (
            ["gcc", "-O2", "-Wall", "-DSMCB_MAIN", "-o", str(tmp / "smcbench"), str(src)],
            ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(tmp / "libsmcbench.so"),
             str(src)],
        ):
            done = proc.run(cmd, capture_output=True, text=True, timeout=300, what="gcc",
                            error=BuildError)
            if done.returncode:
                raise BuildError(f"building the guest helper failed: {' '.join(cmd)}\n"
                                 f"{done.stderr}")
    return exe, lib


def stage(out: Path, programs: Sequence[str], helper: tuple[Path, Path],
          modules: Mapping[str, Path], config: dict[str, Any]) -> str:
    """Copy the guest programs, the helper and the modules into the share `out` and write its
    config.json (paths as the guest sees them); the guest path of config.json."""
    (out / "guest").mkdir(parents=True, exist_ok=True)
    for name in programs:
        shutil.copy2(GUEST_DIR / name, out / "guest" / name)
    exe, lib = helper
    shutil.copy2(exe, out / "guest" / "smcbench")
    shutil.copy2(lib, out / "guest" / "libsmcbench.so")
    guest_modules = {}
    for variant, ko in modules.items():
        dest = out / "modules" / variant
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ko, dest / Path(ko).name)
        guest_modules[variant] = f"{GUEST_SHARE}/modules/{variant}/{Path(ko).name}"
    full = {**config, "modules": guest_modules, "results_dir": GUEST_SHARE,
            "helper": f"{GUEST_SHARE}/guest/smcbench",
            "helper_lib": f"{GUEST_SHARE}/guest/libsmcbench.so"}
    (out / "config.json").write_text(json.dumps(full, indent=1))
    return f"{GUEST_SHARE}/config.json"


def guest_script(program: str, config: str, python: str = sys.executable) -> str:
    """The sh script init.sh runs: the host's python on the guest program, with the host's
    site-packages (no `site` import: 1.5 s under TCG)."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    paths = ":".join(p for p in dirs if Path(p).is_dir())
    return "\n".join([
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "export HOME=/root TMPDIR=/run/smcb/tmp PYTHONDONTWRITEBYTECODE=1 "
        f"PYTHONPATH={paths}",
        'echo "SMCB-SCRIPT-START $(cut -d" " -f1 /proc/uptime)"',
        f"exec {python} -S {GUEST_SHARE}/guest/{program} {config}",
        "",
    ])


def host_tools() -> list[hostpkg.Tool]:
    """What a 9p guest's workload uses of the host (it runs the host's userland)."""
    return [hostpkg.Tool("busybox", "busybox-static"), hostpkg.Tool("gcc", "gcc"),
            hostpkg.Tool("/usr/include/arpa/inet.h", "libc6-dev"), hostpkg.Tool("ip", "iproute2"),
            hostpkg.Tool("rdma", "iproute2"), hostpkg.Tool("modprobe", "kmod"),
            hostpkg.Tool("zstd", "zstd")]

