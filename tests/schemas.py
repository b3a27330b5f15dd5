"""smcpatch's own JSON documents judged by the JSON Schemas the package ships
(src/smcpatch/data/schemas/, smcpatch.data.SCHEMAS; docs/json.md says what each key means).

A document names its kind in its top-level `schema` (`smcpatch-report/1`, ...); a kind that
starts with `smcpatch-` and has no schema is a problem too. The autouse fixture of
tests/conftest.py runs :func:`tree_problems` over what every test wrote under pytest's temporary
directories; the tests that read JSON from stdout call :func:`assert_valid`.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from smcpatch.data import SCHEMAS

PREFIX = "smcpatch-"
SCAN_LIMIT = 256 * 1024 * 1024  # a report of thousands of targets is a few MB


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMAS[kind].read_text(encoding="utf-8"))
    return loaded


@functools.cache
def validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schema(kind), format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(document: Any, kind: str | None = None) -> list[str]:
    """What is wrong with one document, one line each (empty: it is valid). Without `kind`, the
    document's own `schema` names it."""
    if kind is None:
        if not isinstance(document, dict) or not isinstance(document.get("schema"), str):
            return ["not an smcpatch document: no top-level `schema` string"]
        kind = document["schema"]
    if kind not in SCHEMAS:
        return [f"schema {kind!r}: no such smcpatch document kind (smcpatch.data.SCHEMAS)"]
    return [f"{kind}: /{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in sorted(validator(kind).iter_errors(document),
                                key=lambda e: list(map(str, e.absolute_path)))]


def assert_valid(document: Any, kind: str | None = None) -> None:
    found = problems(document, kind)
    assert not found, "\n".join(found)


def is_ours(document: Any) -> bool:
    """A document that says it is smcpatch's: a top-level `schema` starting `smcpatch-`."""
    return (isinstance(document, dict) and isinstance(document.get("schema"), str)
            and document["schema"].startswith(PREFIX))


# -- the files a test wrote ------------------------------------------------------------------------
_checked: dict[Path, tuple[int, int, int]] = {}  # path -> (inode, size, mtime) when judged


def file_problems(path: Path) -> list[str]:
    """An smcpatch document's problems; nothing for another JSON file (or a file gone)."""
    try:
        if path.stat().st_size > SCAN_LIMIT:
            return []
        raw = path.read_bytes()
    except OSError:
        return []
    if PREFIX.encode() not in raw:  # most JSON under a test's tree is not ours: a quick no
        return []
    try:
        document = json.loads(raw)
    except ValueError:
        return []  # not JSON at all (a test writes garbage on purpose): not a document of ours
    return [f"{path}: {p}" for p in problems(document)] if is_ours(document) else []


def tree_problems(roots: Iterable[Path], malformed: Iterable[str] = ()) -> list[str]:
    """The problems of every smcpatch document (`*.json`) under the roots, each file judged once
    while it is unchanged. `malformed`: file-name patterns a test writes broken on purpose."""
    skip = tuple(malformed)
    found: list[str] = []
    for root in roots:
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(directory, d))]
            for name in filenames:
                if not name.endswith(".json"):
                    continue
                path = Path(directory, name)
                try:
                    info = path.lstat()
                except OSError:
                    continue
                identity = (info.st_ino, info.st_size, info.st_mtime_ns)
                # a regular file only: never a FIFO or a device a test writes to (reading would
                # block), nor a link (what it names is judged where it is)
                if not stat.S_ISREG(info.st_mode) or _checked.get(path) == identity:
                    continue
                if not any(fnmatch.fnmatch(name, pattern) for pattern in skip):
                    found += file_problems(path)
                _checked[path] = identity
    return found
