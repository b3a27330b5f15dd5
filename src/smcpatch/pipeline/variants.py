"""Variants stage: ``before/`` (vulnerable) and ``after/`` (fixed) copies of net/smc made from
the classified vendor tree, which is never edited; and patched copies of a variant (the
benchmark's canary, the race's widening), made once per patch and source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import PatchError, SmcpatchError
from ..kernels.targets import Target
from ..plumbing.cache import (
    Cache,
    atomic_dir,
    entry_is_current,
    hash_file,
    hash_inputs,
    publish_dir,
)
from .classify import (
    _FORMAT_VERSION,
    MARKER_NAME,
    SMC_DIR,
    Fix,
    FixState,
    parse_patch,
    patch_tool,
    run_patch,
    summarise,
)


@dataclass
class Variants:
    """The before (vulnerable) and after (fixed) source roots; each holds net/smc."""

    before: Path
    after: Path
    patch_action: Literal["applied", "already-present"]
    notes: list[str] = field(default_factory=list)


def _source_files(tree: Path, states: Iterable[FixState]) -> tuple[list[str], list[str]]:
    """Tree-relative regular files to copy (all of net/smc plus patched files), and notes."""
    smc = tree / SMC_DIR
    if not smc.is_dir():
        raise PatchError(f"{SMC_DIR} not found in {tree}")
    notes: list[str] = []
    files: set[str] = set()
    for p in sorted(smc.rglob("*")):
        rel = p.relative_to(tree).as_posix()
        if p.is_symlink() or (not p.is_file() and not p.is_dir()):
            notes.append(f"skipped non-regular file {rel}")
        elif p.is_file():
            files.add(rel)
    for st in states:
        for rel in st.variant.files:
            p = tree / rel
            if p.is_symlink() or not p.is_file():
                raise PatchError(f"{st.fix_id}: {rel} is not a regular file in {tree}")
            files.add(rel)
    return sorted(files), notes


def _input_hash(tree: Path, files: Sequence[str], states: Sequence[FixState]) -> str:
    h = hashlib.sha256()
    h.update(f"smcpatch-variants/{_FORMAT_VERSION}\n".encode())
    for rel in files:
        h.update(f"file {rel}\n".encode())
        with (tree / rel).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\n")
    for st in states:
        h.update(f"fix {st.fix_id} {st.state} {st.variant.name}\n".encode())
        h.update(hashlib.sha256(st.variant.path.read_bytes()).digest())
    return h.hexdigest()


def _read_marker(dest: Path, want: str) -> Variants | None:
    try:
        data = json.loads((dest / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("input_hash") != want:
        return None
    before, after = dest / "before", dest / "after"
    if not (before / SMC_DIR).is_dir() or not (after / SMC_DIR).is_dir():
        return None
    action = data.get("patch_action")
    notes = data.get("notes")
    if action not in ("applied", "already-present") or not isinstance(notes, list):
        return None
    return Variants(before, after, action, [str(n) for n in notes])


def make_variants(tree: Path, states: list[FixState], dest: Path) -> Variants:
    """Build ``dest/before`` (vulnerable) and ``dest/after`` (fixed) copies of net/smc.

    Vulnerable fixes are applied to ``after``; already-present fixes are reverted in
    ``before``. ``tree`` is only read. Files not touched by a patch keep their vendor mtime
    on both sides, so an incremental build of one side can reuse the other's objects.
    The result is built in a temp dir beside ``dest`` and renamed into place; an existing
    complete ``dest`` with the same input hash is reused as is.
    """
    tree, dest = Path(tree), Path(dest)
    if not states:
        raise PatchError("no fixes to make variants for")
    unknown = [s for s in states if s.state == "unknown"]
    if unknown:
        raise PatchError(
            "; ".join(
                f"{s.fix_id} neither applies nor reverts on {tree}: {s.detail}" for s in unknown
            )
        )
    patch_tool()
    files, copy_notes = _source_files(tree, states)
    want = _input_hash(tree, files, states)
    reused = _read_marker(dest, want)
    if reused is not None:
        return reused

    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise PatchError(f"{dest} exists and is not a directory")
    try:
        with publish_dir(dest) as tmp:
            result = _build(tree, states, files, tmp, want, copy_notes)
    except SmcpatchError:
        raise
    except OSError as e:
        raise PatchError(f"making variants in {dest} failed: {e}") from e
    return Variants(dest / "before", dest / "after", result.patch_action, result.notes)


def _build(
    tree: Path,
    states: Sequence[FixState],
    files: Sequence[str],
    tmp: Path,
    want: str,
    notes: list[str],
) -> Variants:
    before, after = tmp / "before", tmp / "after"
    for side in (before, after):
        for rel in files:
            target = side / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / rel, target)

    applied = False
    # Forward in series order on after; reverse in reverse order on before.
    for st in states:
        if st.state == "vulnerable":
            _apply(after, tree, st, reverse=False)
            applied = True
            notes.append(
                f"{st.fix_id}: applied variant {st.variant.name} ({st.variant.path.name}) to after"
            )
    for st in reversed(states):
        if st.state == "fixed":
            _apply(before, tree, st, reverse=True)
            notes.append(
                f"{st.fix_id}: already present; reverted-for-before with variant "
                f"{st.variant.name} ({st.variant.path.name})"
            )
    action: Literal["applied", "already-present"] = "applied" if applied else "already-present"
    marker = {
        "format": _FORMAT_VERSION,
        "input_hash": want,
        "tree": str(tree),
        "patch_action": action,
        "fixes": [{"id": s.fix_id, "state": s.state, "variant": s.variant.name} for s in states],
        "notes": notes,
    }
    (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return Variants(before, after, action, list(notes))


def _apply(side: Path, tree: Path, st: FixState, *, reverse: bool) -> None:
    v = st.variant
    old_mtimes = {rel: (tree / rel).stat().st_mtime_ns for rel in v.files}
    dry = run_patch(side, v.path, reverse=reverse, dry_run=True)
    if not dry.ok:
        hunks = parse_patch(v.path)
        raise PatchError(
            f"{st.fix_id}: variant {v.name} no longer {'reverts' if reverse else 'applies'} "
            f"on the copy in {side.name}/: {summarise(dry, v, hunks)}"
        )
    real = run_patch(side, v.path, reverse=reverse, dry_run=False)
    if not real.ok:
        hunks = parse_patch(v.path)
        raise PatchError(f"{st.fix_id}: patch failed on {side.name}/: {summarise(real, v, hunks)}")
    # A patched file must not share its mtime with the unpatched copy (make would
    # otherwise consider a stale object up to date); guard against clock skew.
    now = time.time_ns()
    for rel, old in old_mtimes.items():
        new = max(now, old + 1_000_000_000)
        os.utime(side / rel, ns=(new, new))


def variants_dir(cache: Cache, target: Target, fixes: list[Fix]) -> Path:
    """Where the before/after sources of this target and fix set live in the cache."""
    return cache.dir("variants", variant_key(target, fixes))


def variant_key(target: Target, fixes: list[Fix]) -> str:
    ids = "+".join(sorted(f.id for f in fixes)) if fixes else "none"
    return f"{target.key}__{hashlib.sha256(ids.encode()).hexdigest()[:10]}"


def smc_dir(root: Path) -> Path:
    """The net/smc folder of a variant (or of a tree that is only net/smc)."""
    return root / "net" / "smc" if (root / "net" / "smc").is_dir() else root


def patched_copy(cache: Cache, entry_name: str, patch: Path, src: Path, what: str) -> Path:
    """A cached copy of the net/smc sources in `src` with one of our instrumentation patches
    applied (the benchmark's canary, the race's widening): made once per patch and source."""
    entry = cache.dir("variants", entry_name)
    inputs = hash_inputs(hash_file(patch), hash_file(src / "smc_clc.c"))
    with cache.lock(f"patched-{entry_name}"):
        if not entry_is_current(entry, inputs):
            with atomic_dir(entry, inputs) as tmp:
                shutil.copytree(src, tmp / "net" / "smc")
                done = run_patch(tmp, patch, reverse=False, dry_run=False)
                if not done.ok:
                    raise PatchError(f"{patch.name} does not apply to {what}: "
                                     f"{(done.output.splitlines() or ['?'])[-1]}")
    return entry / "net" / "smc"
