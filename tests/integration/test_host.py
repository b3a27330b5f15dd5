"""`smcpatch host --json` on this machine as it is: the shape of the answer, an exit code of 0
or 1, the running kernel marked, and nothing under /etc changed (read-only unless --mitigate)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def etc_state() -> dict[str, str]:
    """Every path under /etc: kind, mode, size, mtime and a file's content hash."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk("/etc"):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
                digest = ""
                if stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                out[str(path)] = f"unreadable {exc.errno}"
                continue
            out[str(path)] = f"{st.st_mode:o} {st.st_size} {st.st_mtime_ns} {digest}"
    return out


def test_host_on_this_machine(tmp_path: Path) -> None:
    before = etc_state()
    out = tmp_path / "host.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SMCPATCH_CACHE": str(tmp_path / "c"),
           "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-c", "import sys; from smcpatch.cli import main; "
                           "main(sys.argv[1:])", "host", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode in (0, 1), (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["schema"] == "smcpatch-host/1" and data["tool_version"]
    assert data["root"] == "/" and data["exit_code"] == proc.returncode
    assert data["running_release"] == os.uname().release
    running = [k for k in data["kernels"] if k["running"]]
    assert [k["release"] for k in running] == [os.uname().release]
    for kernel in data["kernels"]:
        assert kernel["verdict"] in ("vulnerable", "fixed", "not_affected", "unknown")
        assert kernel["smc"] in ("module", "none", "builtin", "no_modules")
        assert isinstance(kernel["loadable"], bool) and isinstance(kernel["exposed"], bool)
    assert data["exposed"] is (proc.returncode == 1)
    assert data["summary"].split(":")[0] in proc.stdout
    assert etc_state() == before
