"""Unpacking archives we did not make (Debian's packages, their tarballs) with dpkg-deb and tar:
hostile members refused (paths or links out of the extraction directory), tar's own words
turned into one clear line, the pipeline a child that dies with the run."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ExtractError
from . import proc


def check_links_inside(root: Path) -> None:
    """Refuse any symlink that resolves outside the extraction directory."""
    base = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = os.readlink(path)
                resolved = (path.parent / target).resolve() if not target.startswith("/") else None
                if resolved is None or not resolved.is_relative_to(base):
                    raise ExtractError(f"refusing {path.relative_to(root)}: a link to {target} "
                                       "points outside the extraction directory")


# GNU tar's words (LC_ALL=C) for members it rewrote or skipped because they point outside the
# extraction directory: tar writes nothing outside, but such an archive is hostile and refused.
_HOSTILE_MARKERS = ("Removing leading", "Member name contains '..'")


def run(args: list[str], what: str, timeout: int = 1800, where: Path | None = None) -> None:
    """Run an extraction command; `where` is the temp dir it writes into (for the messages)."""
    env = {**os.environ, "LC_ALL": "C"}
    done = proc.run(args, capture_output=True, text=True, timeout=timeout, env=env, what=what,
                    error=ExtractError)
    hostile = [ln for ln in done.stderr.splitlines() if any(m in ln for m in _HOSTILE_MARKERS)]
    if hostile:
        raise ExtractError(f"{what}: refusing a hostile archive (a member or link outside the "
                           f"extraction directory): {hostile[-1].strip()[:300]}")
    if done.returncode != 0:
        if "No space left" in done.stderr:
            place = where.parent if where is not None else "the cache"
            raise ExtractError(f"{what}: no space left on device in {place}")
        if where is not None:
            check_links_inside(where)  # a link out of the tree makes tar fail on what follows it
        raise ExtractError(f"{what} failed: {_tail(done.stderr)}")


def run_shell(script: str, args: list[str], what: str, where: Path | None = None) -> None:
    run(["bash", "-c", script, "smcpatch", *args], what, where=where)


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if any("No space left" in ln for ln in lines):
        return "no space left on device"
    generic = ("Exiting with failure status", "subprocess returned error exit status")
    useful = [ln for ln in lines if not any(g in ln for g in generic)] or lines
    return useful[-1][:300] if useful else "no error output"
