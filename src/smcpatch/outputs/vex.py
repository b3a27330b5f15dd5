"""VEX documents in the formats security teams read, all from one list of ProductStatements
(outputs.products): OpenVEX 0.2.0 (the default), CSAF 2.0 VEX and CycloneDX 1.6 VEX.

One path, any number of formats (`--vex PATH --vex-format F ...`): one format is written to PATH
itself; several are written beside it, each format's suffix in place of PATH's `.json`
(v.json -> v.openvex.json, v.csaf.json, v.cdx.json), so one option names the whole set and each
file says what it holds; a consumer is handed the file it reads. A device or pipe takes one
format only (several documents in one stream would be no document).

A writer is a module with NAME, SUFFIX and render(VexDocument) -> str; it is imported only when
its format is asked for (cyclonedx-python-lib is the slowest import).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit

from ..errors import BadInput, NothingToState
from ..plumbing import files
from .products import ProductStatement, Publisher, VexDocument

FORMATS = {"openvex": "OpenVEX", "csaf": "CSAF VEX", "cyclonedx": "CycloneDX VEX"}
DEFAULT = ("openvex",)


class Writer(Protocol):
    NAME: str
    SUFFIX: str

    def render(self, doc: VexDocument) -> str: ...


def writer(name: str) -> Writer:
    return cast(Writer, importlib.import_module(f"{__package__}.{name}"))


@dataclass(frozen=True)
class VexOutput:
    """Where the documents go, in which formats, published by whom."""

    path: Path
    formats: tuple[str, ...] = DEFAULT
    publisher: Publisher = field(default_factory=Publisher)

    def paths(self) -> dict[str, Path]:
        """format -> its file."""
        if len(self.formats) == 1:
            return {self.formats[0]: self.path}
        stem = self.path.name.removesuffix(".json")
        return {f: self.path.with_name(stem + writer(f).SUFFIX) for f in self.formats}


def check_formats(values: Sequence[str]) -> tuple[str, ...]:
    """--vex-format values, each once, in the order given (default: OpenVEX)."""
    for value in values:
        if value not in FORMATS:
            raise BadInput(f"--vex-format {value!r}: choose {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(values)) or DEFAULT


def check_publisher(name: str | None, namespace: str | None) -> Publisher:
    """--vex-publisher and --vex-namespace (CSAF: the issuer's name and a URL it controls)."""
    default = Publisher()
    name = default.name if name is None else name
    if not name.strip() or not name.isprintable() or len(name) > 200:
        raise BadInput(f"--vex-publisher {name!r}: a name on one line, 1 to 200 characters")
    namespace = default.namespace if namespace is None else namespace
    try:
        parts = urlsplit(namespace)
        hostname = parts.hostname
    except ValueError:  # urlsplit refuses some URLs outright ("https://[::1": invalid IPv6)
        hostname = None
    if hostname is None or parts.scheme not in ("https", "http") or not namespace.isprintable() \
            or " " in namespace:
        raise BadInput(f"--vex-namespace {namespace!r}: an http(s) URL the publisher controls, "
                       "e.g. https://security.example.com")
    return Publisher(name.strip(), namespace)


_NOT_BESIDE = ("/dev", "/proc", "/sys")  # where a name of our own making has no place


def check_output(output: VexOutput) -> VexOutput:
    """Every file the output will write can be written (before any work). Names derived from
    PATH (several formats) only for a regular file or a new name, never beside a device."""
    path = output.path.expanduser()
    if len(output.formats) > 1:
        kind = files.output_kind(path, "--vex")
        parent = os.path.realpath(path.parent)
        if kind != files.FILE or any(parent == d or parent.startswith(d + "/")
                                     for d in _NOT_BESIDE):
            raise BadInput(f"--vex {path}: several formats are written to files named after it, "
                           "not into a device or pipe (nor beside a device, nor a descriptor "
                           "such as /dev/stdout): give a file name, or one --vex-format")
    output = VexOutput(path, output.formats, output.publisher)
    for fmt, target in output.paths().items():
        files.check_output(target, f"--vex ({fmt})" if len(output.formats) > 1 else "--vex")
    return output


def write(output: VexOutput, statements: Iterable[ProductStatement],
          generated: datetime | None = None) -> dict[str, Path]:
    """Every format asked for, each from the same document; format -> the file written. With
    nothing to state no document can exist: an earlier run's file under these names is removed
    (never left for CI to collect as this run's), and NothingToState says so."""
    doc = VexDocument.of(statements, generated, output.publisher)
    paths = output.paths()
    if not doc.statements:
        removed = [str(p) for p in paths.values() if files.withdraw_output(p)]
        gone = f"; the earlier {', '.join(removed)} removed" if removed else ""
        raise NothingToState(f"--vex {output.path}: nothing was judged, and a VEX document "
                             f"needs at least one statement: none written{gone} (the other "
                             "reports say why)")
    for fmt, path in paths.items():
        files.write_output(path, writer(fmt).render(doc), "--vex")
    return paths
