"""What a user may type for --kernel, read in one place: an upstream version (6.1.176, or a
matrix name such as 6.12.107+deb13), a Debian package version (6.12.95-1~bpo12+1) or a kernel
release as `uname -r` prints it (6.12.95+deb12-amd64)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..errors import BadInput
from .targets import ALL_FLAVOURS

_RELEASE = re.compile(rf"^(?P<abi>\d+\.\d+[^\s]*?)-(?P<flavour>{'|'.join(ALL_FLAVOURS)})$")
_DEBIAN = re.compile(r"^(?P<upstream>\d+\.\d+(?:\.\d+)?(?:~rc\d+)?)-[0-9A-Za-z.+~]+$")
_UPSTREAM = re.compile(r"^(?P<upstream>\d+\.\d+\.\d+)(?P<suffix>[0-9A-Za-z.+~]*)$")

Kind = Literal["release", "debian", "upstream"]


@dataclass(frozen=True)
class KernelSpec:
    """One --kernel value, understood."""

    text: str
    kind: Kind
    upstream: str  # 6.12.95, 7.3~rc7; a matrix name keeps its suffix (6.12.107+deb13)
    series: str  # 6.12: names linux-source-<series>
    abi: str = ""  # a kernel release only: 6.12.95+deb12
    flavour: str = ""  # a kernel release only: amd64, cloud-arm64, ...

    @property
    def plain_upstream(self) -> bool:
        """A bare upstream version (6.12.95), which the archive can be asked for."""
        return self.kind == "upstream" and self.upstream == self.text and "+" not in self.text


def parse(text: str) -> KernelSpec:
    """The one reading of a kernel the user names; anything else (a bare series, words, shell
    syntax) is bad input."""
    text = text.strip()
    if match := _RELEASE.match(text):
        return KernelSpec(text, "release", match["abi"], series_of(match["abi"]),
                          abi=match["abi"], flavour=match["flavour"])
    if match := _DEBIAN.match(text):
        return KernelSpec(text, "debian", match["upstream"], series_of(match["upstream"]))
    if match := _UPSTREAM.match(text):
        return KernelSpec(text, "upstream", text, series_of(match["upstream"]))
    raise BadInput(f"{text!r} is not a kernel version like 6.1.176, 6.12.95-1~bpo12+1 or "
                   "6.12.95+deb12-amd64")


def parse_version(text: str) -> tuple[str, str]:
    """'6.1.176' → ('6.1', '6.1.176'): the series and the text (bad input otherwise)."""
    spec = parse(text)
    return spec.series, spec.text


def upstream_of(package_version: str) -> str:
    """6.12.95-1~bpo12+1 -> 6.12.95; 7.3~rc7-1~exp1 -> 7.3~rc7."""
    return package_version.split("-", 1)[0]


def series_of(upstream: str) -> str:
    """6.12.95 -> 6.12; 7.3~rc7 -> 7.3; an ABI (6.1.0-50, 6.12.95+deb12) -> its series."""
    return ".".join(re.split(r"[~+-]", upstream, maxsplit=1)[0].split(".")[:2])
