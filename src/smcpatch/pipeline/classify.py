"""Classify stage: which fixes a kernel tree lacks (the variants stage makes before/after).

``load_series`` reads ``patches/series`` (format documented at the top of that file) into
:class:`Fix` objects. ``classify`` dry-runs each fix's patch on a vendor tree with GNU patch:
a clean forward dry-run means the tree is vulnerable, a clean reverse dry-run means it is
already fixed, neither means unknown (and the detail names the rejected hunks).

Pitfall this module exists to avoid: ``patch --batch -R`` on a tree the patch has *not* been
applied to silently assumes the patch is reversed and applies it forward ("Unreversed patch
detected! Ignoring -R."), and ``-t``/``-f`` do the same in the other direction. Every call
here therefore passes ``--forward`` (``-N``) together with ``--batch``, also for reverse runs,
and ``--fuzz=0`` so a hunk never lands on look-alike code.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..errors import ConfigError, PatchError, ToolMissing, UnknownFix
from ..plumbing import hostpkg, proc
from ..plumbing.files import MB, read_input

SERIES_NAME = "series"
MARKER_NAME = ".smcpatch-variants.json"
SMC_DIR = "net/smc"
PATCH_TIMEOUT = 120.0
PATCH_LIMIT = 8 * MB  # a fix's patch is a few KB: a larger file is refused unread
_FORMAT_VERSION = 1

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_C_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")

State = Literal["vulnerable", "fixed", "unknown"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PatchVariant:
    """One way of applying a fix: a -p1 patch file plus the probe saying when it fits."""

    fix_id: str
    name: str
    path: Path
    functions: tuple[str, ...]
    files: tuple[str, ...]
    #: (tree-relative file, symbol) pairs that must all be present; empty means fallback.
    requires: tuple[tuple[str, str], ...] = ()

    @property
    def is_fallback(self) -> bool:
        return not self.requires

    def describe_probe(self) -> str:
        if self.is_fallback:
            return "fallback"
        return "requires " + ",".join(f"{p}:{s}" for p, s in self.requires)


@dataclass(frozen=True)
class Fix:
    """A fix (one CVE) with its variants, ordered by preference."""

    id: str
    title: str
    variants: tuple[PatchVariant, ...]
    #: False for fixes marked `default no` in the series: loaded only when asked for.
    default: bool = True

    @property
    def functions(self) -> tuple[str, ...]:
        return self.variants[0].functions

    @property
    def files(self) -> tuple[str, ...]:
        return self.variants[0].files


@dataclass
class FixState:
    """Result of classifying one fix on one tree."""

    fix_id: str
    state: State
    variant: PatchVariant
    detail: str


# --------------------------------------------------------------------------- patch files


@dataclass(frozen=True)
class _Hunk:
    file: str
    number: int  # 1-based within its file, as GNU patch counts
    header: str
    old_start: int
    body: tuple[str, ...]


def _strip_p1(raw: str) -> str | None:
    name = raw.split("\t", 1)[0].strip()
    if name == "/dev/null":
        return None
    parts = PurePosixPath(name).parts
    if len(parts) < 2:
        return None
    return str(PurePosixPath(*parts[1:]))


def _safe_relpath(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def parse_patch(path: Path) -> list[_Hunk]:
    """The hunks of a unified -p1 diff, with the file each belongs to."""
    try:
        lines = read_input(path, "patch", PATCH_LIMIT).decode("utf-8", "replace").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read patch {path}: {e.strerror}") from e
    hunks: list[_Hunk] = []
    current: str | None = None
    number = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            target = _strip_p1(lines[i + 1][4:]) or _strip_p1(line[4:])
            if target is None or not _safe_relpath(target):
                raise ConfigError(f"{path.name}: unusable file name in {lines[i + 1]!r}")
            current, number = target, 0
            i += 2
            continue
        m = _HUNK_RE.match(line)
        if m and current is not None:
            old_len = int(m.group(2) or "1")
            new_len = int(m.group(4) or "1")
            body: list[str] = []
            i += 1
            while i < len(lines) and (old_len > 0 or new_len > 0):
                b = lines[i]
                tag = b[:1]
                if tag in (" ", ""):
                    old_len, new_len = old_len - 1, new_len - 1
                elif tag == "-":
                    old_len -= 1
                elif tag == "+":
                    new_len -= 1
                elif tag == "\\":
                    pass
                else:
                    break
                body.append(b)
                i += 1
            if old_len > 0 or new_len > 0:
                raise ConfigError(f"{path.name}: truncated hunk {line!r}")
            number += 1
            hunks.append(_Hunk(current, number, line, int(m.group(1)), tuple(body)))
            continue
        i += 1
    if not hunks:
        raise ConfigError(f"{path.name}: no unified diff hunks found")
    return hunks


# --------------------------------------------------------------------------- series


def load_series(
    patches_dir: Path, select: Literal["default", "all"] | Collection[str] = "default"
) -> list[Fix]:
    """Parse ``patches_dir/series`` (the whole file is always validated; every referenced
    patch must exist and match its fix) and return the fixes ``select`` names: see
    :func:`select_fixes`."""
    return select_fixes(read_series(patches_dir), select, Path(patches_dir) / SERIES_NAME)


def select_fixes(fixes: list[Fix], wanted: str | Collection[str] = "default",
                 series: Path | None = None) -> list[Fix]:
    """The one way fixes are chosen, in series order: ``default`` (those not marked ``default
    no``), ``all``, or fix ids (an unknown one is refused, naming the choices)."""
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    if "all" in names:
        return fixes
    if not names or names == ["default"]:
        return [f for f in fixes if f.default]
    unknown = [w for w in names if w not in {f.id for f in fixes}]
    if unknown:
        where = series or "the patch series"
        raise UnknownFix(f"unknown fix {', '.join(unknown)}: {where} has no fix with id "
                         f"{', '.join(unknown)}; choose all, default or one of "
                         f"{', '.join(f.id for f in fixes)}")
    return [f for f in fixes if f.id in names]


def read_series(patches_dir: Path) -> list[Fix]:
    """Every fix of ``patches_dir/series``, validated."""
    patches_dir = Path(patches_dir).resolve()
    series = patches_dir / SERIES_NAME
    if not series.exists():
        raise ConfigError(f"patch series not found: {series}")
    try:
        text = read_input(series, "patch series", 1 * MB).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read patch series {series}: {e}") from e
    fixes: list[Fix] = []
    for raw in _series_entries(text, series):
        if any(f.id == raw["id"] for f in fixes):
            raise ConfigError(f"{series}:{raw['line']}: duplicate fix id {raw['id']}")
        fixes.append(_fix_from(raw, patches_dir, series))
    if not fixes:
        raise ConfigError(f"{series}: no fixes defined")
    return fixes


def _series_entries(text: str, series: Path) -> list[dict[str, Any]]:
    """The series file's `fix` blocks as raw fields, each line checked for its syntax."""
    entries: list[dict[str, Any]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{series}:{n}"
        words = line.split()
        key = words[0]
        if key == "fix":
            parts = line.split(None, 2)
            if len(parts) < 3:
                raise ConfigError(f"{where}: expected 'fix <ID> <title>'")
            if not _ID_RE.match(parts[1]):
                raise ConfigError(f"{where}: bad fix id {parts[1]!r}")
            if any(e["id"] == parts[1] for e in entries):
                raise ConfigError(f"{where}: duplicate fix id {parts[1]}")
            entries.append({"id": parts[1], "title": parts[2], "line": n, "functions": [],
                            "files": [], "variants": [], "default": True})
            continue
        if not entries:
            raise ConfigError(f"{where}: {key!r} line before any 'fix' line")
        cur = entries[-1]
        if key == "function":
            if len(words) < 2 or not all(_IDENT_RE.match(w) for w in words[1:]):
                raise ConfigError(f"{where}: expected 'function <C identifier>...'")
            cur["functions"].extend(w for w in words[1:] if w not in cur["functions"])
        elif key == "file":
            if len(words) < 2 or not all(_safe_relpath(w) for w in words[1:]):
                raise ConfigError(f"{where}: expected 'file <relative path>...'")
            cur["files"].extend(w for w in words[1:] if w not in cur["files"])
        elif key == "variant":
            cur["variants"].append(_parse_variant(words, n, cur, where))
        elif key == "default":
            if words[1:] not in (["yes"], ["no"]):
                raise ConfigError(f"{where}: expected 'default yes' or 'default no'")
            cur["default"] = words[1] == "yes"
        else:
            raise ConfigError(f"{where}: unknown keyword {key!r}")
    return entries


def _fix_from(cur: dict[str, Any], patches_dir: Path, series: Path) -> Fix:
    """One fix: its required lines present, each variant's patch file there and changing
    exactly the files the fix declares."""
    loc = f"{series}:{cur['line']}"
    for needed in ("function", "file", "variant"):
        if not cur[f"{needed}s"]:
            raise ConfigError(f"{loc}: fix {cur['id']} has no '{needed}' line")
    variants: list[PatchVariant] = []
    for n, name, patch_name, requires in cur["variants"]:
        ppath = patches_dir / patch_name
        if not ppath.is_file():
            raise ConfigError(f"{series}:{n}: patch file not found: {ppath}")
        touched = sorted({h.file for h in parse_patch(ppath)})
        if touched != sorted(cur["files"]):
            raise ConfigError(
                f"{series}:{n}: {patch_name} changes {', '.join(touched)} but fix "
                f"{cur['id']} declares file {', '.join(cur['files'])}"
            )
        variants.append(PatchVariant(fix_id=cur["id"], name=name, path=ppath,
                                     functions=tuple(cur["functions"]),
                                     files=tuple(cur["files"]), requires=requires))
    return Fix(id=cur["id"], title=cur["title"], variants=tuple(variants), default=cur["default"])


def _parse_variant(
    words: list[str], n: int, cur: dict[str, Any], loc: str
) -> tuple[int, str, str, tuple[tuple[str, str], ...]]:
    if len(words) < 4:
        raise ConfigError(f"{loc}: expected 'variant <name> <patch> <probe>'")
    name, patch_name, probe = words[1], words[2], words[3:]
    if not _ID_RE.match(name):
        raise ConfigError(f"{loc}: bad variant name {name!r}")
    if any(v[1] == name for v in cur["variants"]):
        raise ConfigError(f"{loc}: duplicate variant {name} in fix {cur['id']}")
    if any(not v[3] for v in cur["variants"]):
        raise ConfigError(f"{loc}: variant {name} comes after a fallback and can never be used")
    if "/" in patch_name or not _safe_relpath(patch_name):
        raise ConfigError(f"{loc}: patch must be a file name in the patches directory")
    if probe == ["fallback"]:
        return (n, name, patch_name, ())
    if len(probe) != 2 or probe[0] != "requires":
        raise ConfigError(f"{loc}: probe must be 'requires <path>:<symbol>[,...]' or 'fallback'")
    reqs: list[tuple[str, str]] = []
    for item in probe[1].split(","):
        rel, sep, sym = item.rpartition(":")
        if not sep or not _safe_relpath(rel) or not _IDENT_RE.match(sym):
            raise ConfigError(f"{loc}: bad requirement {item!r}, expected <path>:<symbol>")
        reqs.append((rel, sym))
    return (n, name, patch_name, tuple(reqs))


# --------------------------------------------------------------------------- probing


def choose_variant(fix: Fix, tree: Path) -> PatchVariant:
    """The first variant of ``fix`` whose probe holds on ``tree``.

    A probe file that is missing from the tree is an error rather than a silent
    fallback: without it we cannot tell which variant compiles.
    """
    tree = Path(tree)
    for v in fix.variants:
        if all(_has_symbol(tree, rel, sym, fix.id, v.name) for rel, sym in v.requires):
            return v
    probes = "; ".join(f"{v.name}: {v.describe_probe()}" for v in fix.variants)
    raise PatchError(f"{fix.id}: no patch variant fits {tree} ({probes})")


def _has_symbol(tree: Path, rel: str, sym: str, fix_id: str, variant: str) -> bool:
    path = tree / rel
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise PatchError(
            f"{fix_id}: cannot probe variant {variant}: {rel} missing or unreadable in {tree}"
        ) from e
    code = _C_COMMENT_RE.sub(" ", text)  # a mention in a comment is not a definition
    return re.search(rf"\b{re.escape(sym)}\b", code) is not None


# --------------------------------------------------------------------------- running patch


TOOL = hostpkg.Tool("patch", "patch")  # GNU patch: classify and the variants run it


def patch_tool() -> str:
    """Path of GNU patch, or ToolMissing naming the install command."""
    exe = shutil.which("patch")
    if exe is None:
        raise ToolMissing("patch(1) not found; install it with: apt-get install patch")
    return exe


@dataclass(frozen=True)
class _PatchRun:
    ok: bool
    returncode: int
    output: str


def run_patch(tree: Path, patch: Path, *, reverse: bool, dry_run: bool) -> _PatchRun:
    """The one way smcpatch runs GNU patch (classify's dry runs, the variants, patched copies,
    the DKMS package's check): -p1 in `tree`, --batch --forward --fuzz=0, never -t or -f."""
    cmd = [
        patch_tool(),
        "-p1",
        "--batch",
        "--forward",  # with --batch, never "assume reversed" (see module docstring)
        "--fuzz=0",
        "--no-backup-if-mismatch",
        "--reject-file=-",
        "--quoting-style=literal",
        "-d",
        str(tree),
        "-i",
        str(patch.resolve()),  # -d changes directory first
    ]
    if reverse:
        cmd.append("--reverse")
    if dry_run:
        cmd.append("--dry-run")
    env = dict(os.environ, LC_ALL="C", LANG="C")
    env.pop("POSIXLY_CORRECT", None)
    env.pop("PATCH_GET", None)
    env.pop("PATCH_VERSION_CONTROL", None)
    env.pop("VERSION_CONTROL", None)
    try:
        done = proc.run(cmd, capture_output=True, text=True, errors="replace",
                        timeout=PATCH_TIMEOUT, env=env, what=f"patch on {patch.name}",
                        error=PatchError)
    except FileNotFoundError as e:
        raise ToolMissing("patch(1) not found; install it with: apt-get install patch") from e
    out = str(done.stdout + done.stderr).strip()
    if "malformed patch" in out or "Only garbage was found" in out:
        raise ConfigError(f"{patch.name} is not a usable patch: {_first_line(out)}")
    return _PatchRun(done.returncode == 0, done.returncode, out)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


_CHECK_RE = re.compile(r"^(?:checking|patching) file (.+)$")
_FAILED_RE = re.compile(r"^Hunk #(\d+) FAILED at (\d+)")
_MOVED_RE = re.compile(r"^Hunk #(\d+) succeeded at (\d+)(.*)$")


def _describe_hunk(h: _Hunk, functions: Sequence[str]) -> str:
    text = "\n".join(h.body)
    fn = next((f for f in functions if re.search(rf"\b{re.escape(f)}\b", text)), None)
    where = f" in {fn}()" if fn else ""
    return f"{h.file} hunk #{h.number}{where}"


def summarise(run: _PatchRun, variant: PatchVariant, hunks: Sequence[_Hunk]) -> str:
    """Which hunks patch rejected (or why it skipped a file), in one line."""
    by_key = {(h.file, h.number): h for h in hunks}
    msgs: list[str] = []
    current = ""
    for line in run.output.splitlines():
        line = line.strip()
        if m := _CHECK_RE.match(line):
            current = m.group(1)
        elif m := _FAILED_RE.match(line):
            h = by_key.get((current, int(m.group(1))))
            name = _describe_hunk(h, variant.functions) if h else f"{current} hunk #{m.group(1)}"
            msgs.append(f"{name} rejected (expected at line {m.group(2)})")
        elif line.startswith("Reversed (or previously applied) patch detected"):
            msgs.append(f"{current}: looks already applied")
        elif line.startswith("Unreversed patch detected"):
            msgs.append(f"{current}: looks not applied")
        elif line.startswith("No file to patch"):
            msgs.append("a file to patch is not in the tree")
    if not msgs:
        msgs.append(_first_line(run.output) or f"patch exited {run.returncode}")
    return "; ".join(msgs)


def _offsets(run: _PatchRun) -> list[str]:
    notes: list[str] = []
    current = ""
    for line in run.output.splitlines():
        line = line.strip()
        if m := _CHECK_RE.match(line):
            current = m.group(1)
        elif m := _MOVED_RE.match(line):
            extra = m.group(3).strip().rstrip(".")
            notes.append(f"{current} hunk #{m.group(1)} at line {m.group(2)} {extra}".rstrip())
    return notes


# --------------------------------------------------------------------------- classify


def classify(tree: Path, fixes: list[Fix]) -> list[FixState]:
    """Dry-run every fix on ``tree``: vulnerable, fixed or unknown. Never writes to ``tree``."""
    tree = Path(tree)
    if not tree.is_dir():
        raise PatchError(f"kernel tree not found: {tree}")
    patch_tool()
    return [_classify_one(tree, fix) for fix in fixes]


def _classify_one(tree: Path, fix: Fix) -> FixState:
    try:
        variant = choose_variant(fix, tree)
    except PatchError as e:
        return FixState(fix.id, "unknown", fix.variants[0], e.one_line())
    missing = [f for f in variant.files if not (tree / f).is_file()]
    if missing:
        return FixState(fix.id, "unknown", variant, f"not in tree: {', '.join(missing)}")
    hunks = parse_patch(variant.path)
    fwd = run_patch(tree, variant.path, reverse=False, dry_run=True)
    rev = run_patch(tree, variant.path, reverse=True, dry_run=True)
    if fwd.ok and rev.ok:
        return FixState(
            fix.id,
            "unknown",
            variant,
            f"variant {variant.name} both applies and reverts: patch is ambiguous on this tree",
        )
    if fwd.ok:
        where = _offsets(fwd)
        extra = f" ({'; '.join(where)})" if where else ""
        return FixState(
            fix.id, "vulnerable", variant, f"variant {variant.name} applies forward{extra}"
        )
    if rev.ok:
        return FixState(fix.id, "fixed", variant, f"variant {variant.name} reverts cleanly")
    # The fix may be present in the form of another variant (e.g. our compat patch).
    for other in fix.variants:
        if other is variant:
            continue
        o_rev = run_patch(tree, other.path, reverse=True, dry_run=True)
        if o_rev.ok:
            return FixState(
                fix.id,
                "fixed",
                other,
                f"variant {other.name} reverts cleanly (preferred {variant.name} does not fit)",
            )
    detail = (
        f"variant {variant.name}: forward: {summarise(fwd, variant, hunks)}; "
        f"reverse: {summarise(rev, variant, hunks)}"
    )
    return FixState(fix.id, "unknown", variant, detail)


__all__ = [
    "Fix",
    "FixState",
    "PatchVariant",
    "choose_variant",
    "classify",
    "load_series",
    "read_series",
    "select_fixes",
    "patch_tool",
]
