"""Package URLs, spelled one way: every purl smcpatch writes comes from `purl()`, built by
packageurl-python (the purl specification's canonical encoding: '+' as %2B, an epoch's ':' kept).

Debian's packages are ``pkg:deb/debian/<package>@<version>?arch=<arch>``, without a ``distro=``
qualifier: VEX consumers match a statement's purl against the purls their scanner made, and
go-vex (trivy's OpenVEX matcher) wants every qualifier of the statement on the scanned purl with
the same value. trivy writes ``distro=debian-12.13`` (the point release), syft ``debian-12``:
whichever we chose would stop the others' matches, while name, version and arch already name one
file of Debian's pool. smcpatch's own rebuilt modules are ``pkg:generic/smcpatch/smc.ko@<kernel
release>?arch=<arch>``. A file inside a package is the package's purl with a subpath.
"""

from __future__ import annotations

from typing import Literal

from packageurl import PackageURL

Origin = Literal["debian", "smcpatch"]  # whose product: Debian's package, or our rebuild

_KIND: dict[str, tuple[str, str]] = {"debian": ("deb", "debian"),
                                     "smcpatch": ("generic", "smcpatch")}


def purl(origin: Origin, name: str, version: str, arch: str, subpath: str = "") -> str:
    """The canonical purl of a product (a subpath names a file inside it)."""
    kind, namespace = _KIND[origin]
    return PackageURL(type=kind, namespace=namespace, name=name, version=version,
                      qualifiers={"arch": arch}, subpath=subpath.strip("/") or None).to_string()
