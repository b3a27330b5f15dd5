"""What a kernel image package says for itself, taken out of it in one place (fetch and scan):
its smc.ko and tls.ko (any compression) and its Debian changelog, nothing else of the 60-100 MB
package (its data.tar.xz is one xz stream: the whole of it is decoded once)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..plumbing import unpack

# tar's "Not found" is an answer: a kernel without SMC (Debian's 7.x) ships no smc.ko, an
# empty shell (>= 6.19) no changelog
_SCRIPT = ('set -o pipefail; dpkg-deb --fsys-tarfile "$1" | '
           'tar -x --no-same-owner --wildcards -C "$2" "*/kernel/net/smc/smc.ko*" '
           '"*/kernel/net/tls/tls.ko*" "./usr/share/doc/*/changelog*" 2>"$2/.tar-errors" '
           '|| grep -q "Not found in archive" "$2/.tar-errors"; '
           'rc=$?; cat "$2/.tar-errors" >&2; exit $rc')  # unpack.run reads tar's words


@dataclass(frozen=True)
class ImageFiles:
    module: Path | None  # dest/smc.ko[.xz|.zst]; None: the package ships no SMC module
    module_path: str  # where it lives in the package (lib/modules/<release>/kernel/net/smc/...)
    changelog: Path | None  # dest/changelog[.gz]: Debian's (changelog.Debian.gz first)
    tls_module: Path | None = None  # dest/tls.ko[...]: CVE-2025-40149's module, when shipped
    tls_module_path: str = ""  # where it lives in the package


def extract_module(deb: Path, dest: Path) -> ImageFiles:
    """smc.ko, tls.ko and the changelog of `deb`, moved to the top of `dest` (which must
    exist)."""
    work = dest / ".unpack"
    work.mkdir()
    unpack.run_shell(_SCRIPT, [str(deb), str(work)], what=f"extract {deb.name}", where=work)
    unpack.check_links_inside(work)
    changelogs = sorted((p for p in work.glob("usr/share/doc/*/changelog*") if p.is_file()),
                        key=lambda p: ("Debian" not in p.name, p.name))
    changelog = None
    if changelogs:
        changelog = dest / f"changelog{''.join(changelogs[0].suffixes[-1:])}"
        changelogs[0].rename(changelog)
    module, inside = _take(work, "smc", dest)
    tls, tls_inside = _take(work, "tls", dest)
    shutil.rmtree(work)
    return ImageFiles(module, inside, changelog, tls, tls_inside)


def _take(work: Path, name: str, dest: Path) -> tuple[Path | None, str]:
    """net/<name>/<name>.ko* moved to dest, and its path in the package."""
    modules = sorted(p for p in work.glob(f"**/kernel/net/{name}/{name}.ko*") if p.is_file())
    if not modules:
        return None, ""
    module = dest / modules[0].name
    modules[0].rename(module)
    return module, modules[0].relative_to(work).as_posix()
