"""Fetch stage: Debian packages of one kernel → a headers+kbuild tree (KDIR) and net/smc sources.

Nothing is installed: packages are downloaded with a private apt configuration and unpacked with
dpkg-deb -x into the cache. Each extracted entry is keyed by the exact package versions and written
atomically, so a warm run touches neither apt nor the network.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, ExtractError, FetchError
from ..kernels.targets import Target
from ..plumbing import hostpkg, proc, unpack
from ..plumbing.apt import Apt, PackageRecord
from ..plumbing.cache import (
    MANIFEST,
    Cache,
    atomic_dir,
    entry_is_current,
    hash_file,
    hash_inputs,
    read_manifest,
    tree_fingerprint,
)
from ..plumbing.files import write_atomic
from ..plumbing.progress import Progress, silent
from . import images

# Bump when the way we extract changes, so old cache entries are rebuilt.
EXTRACT_RECIPE = 3
SOURCE_MEMBERS = ("net/smc/*", "include/net/dst.h")
KDIR_RECIPE = 2  # 2: KBUILD_OUTPUT relocated too (Debian 7.x headers)
SHIPPED_RECIPE = 2  # 2: the image's changelog beside smc.ko (what Debian says of the CVE)
# How each entry's files are checked on use (cache.tree_fingerprint): the small ones by content,
# the big headers tree (17k files) by its names and directory mtimes, which costs ~30 ms.
CONTENT_CHECK = {"source": "full", "kdir": "listing", "shipped": "full"}
SHIPPED_FACTS = {"deb_sha256", "module_path"}  # what a shipped entry's manifest says of the image



@dataclass
class Workspace:
    """What the later stages need from one kernel's packages."""

    target: Target
    kdir: Path  # the prepared headers tree: make -C <kdir> M=...
    source_tree: Path  # a partial kernel tree: net/smc/*, include/net/dst.h
    shipped_module: Path | None  # Debian's own smc.ko / smc.ko.xz, the reference
    image_deb: Path | None  # the linux-image package (for the VM stage)
    changelog: Path | None = None  # the image's Debian changelog (gz), as shipped
    image_package: str = ""  # the package Debian's module came from (maybe the -unsigned twin)
    image_sha256: str = ""  # that package's SHA256, as the archive's index says (VEX products)
    image_module_path: str = ""  # where Debian's smc.ko lives in it (lib/modules/...)
    kdir_root: Path | None = None  # the extracted packages' root, bind-mounted for chroot builds
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    downloaded_bytes: int = 0
    from_cache: bool = False

    @property
    def symvers(self) -> Path:
        return self.kdir / "Module.symvers"

    @property
    def kernel_config(self) -> Path:
        return self.kdir / ".config"


# -- fetch -------------------------------------------------------------------------------------
def package_records(apt: Apt, target: Target, with_image: bool = True) -> dict[str, PackageRecord]:
    """The archive's records of the target's packages, keyed by the names asked for (a record
    may be a stand-in). A foreign kernel's headers and image are of its architecture
    (name:arm64); the source and common headers are arch-independent, and kbuild is the build
    host's own (its helpers run there) of the same version."""
    names = ([] if target.judge_only else
             [target.source_package, target.headers_package, target.common_headers_package,
              target.kbuild])
    if with_image:
        names.append(target.image_package)
    own_arch = {target.headers_package, target.image_package} if target.foreign else set()
    records: dict[str, PackageRecord] = {}
    for name in names:
        qualified = f"{name}:{target.arch}" if name in own_arch else name
        record = apt.show(qualified, target.package_version)
        if record is None and name == f"linux-kbuild-{target.series}":
            record = _substitute_kbuild(apt, name)
        if record is None and name == target.image_package:
            # the newest security kernels may ship only the unsigned image: the same modules
            unsigned = f"{name}-unsigned:{target.arch}" if target.foreign else f"{name}-unsigned"
            record = apt.show(unsigned, target.package_version)
        if record is None and name in own_arch and not apt.serves_arch(target.suite,
                                                                        target.arch):
            raise FetchError(f"{target.suite} serves no {target.arch} packages (its index has "
                             f"none): no {target.arch} kernel {target.package_version} to "
                             "fetch from there")
        if record is None:
            raise FetchError(missing_package_message(qualified, target.package_version,
                                                     apt.versions(qualified)))
        records[name] = record
    return records


def missing_package_message(name: str, version: str, available: list[str]) -> str:
    """Why name=version can't be fetched, never contradicting itself: the versions of that very
    package the archive has, or that it has none at all."""
    others = [v for v in available if v != version]
    if version in available:
        return (f"{name} {version} is listed in the archive's index but its record cannot be "
                "read (a damaged or partial index): rerun to refresh it")
    if others:
        return (f"{name} {version} is no longer in the archive; versions of {name} available: "
                f"{', '.join(others[:12])}")
    return f"the archive has no package {name} at all (no version of it in any served suite)"


def _substitute_kbuild(apt: Apt, name: str) -> PackageRecord | None:
    """linux-kbuild-6.1 is not per-ABI and the archive keeps only its newest versions: when the
    exact one is gone, the newest of the same series builds the module (the vermagic and
    modversions checks then vouch for the result against the kernel's own Module.symvers)."""
    for version in apt.versions(name):
        record = apt.show(name, version)
        if record is not None:
            return record
    return None


def _keys(target: Target) -> dict[str, str]:
    ident = (target.package_version, target.abi, target.series, target.kbuild, EXTRACT_RECIPE)
    return {
        "source": hash_inputs("source", target.source_package, *ident),
        "kdir": hash_inputs("kdir", KDIR_RECIPE, target.flavour, *ident),
        "shipped": hash_inputs("shipped", SHIPPED_RECIPE, target.flavour, *ident),
    }


def _entries(cache: Cache, target: Target) -> dict[str, Path]:
    return {
        "source": cache.dir("sources", f"{target.source_package}_{target.package_version}"),
        "kdir": cache.dir("kdir", target.key),
        "shipped": cache.dir("shipped", target.key),
    }


def fetch(cache: Cache, target: Target, progress: Progress = silent,
          apt_factory: Callable[[Cache, Target], Apt] | None = None) -> Workspace:
    """Download and extract what one target needs, reusing every complete cache entry; a
    user's tree is used where it is."""
    if target.tree is not None and target.tree_kdir is not None:
        return Workspace(target=target, kdir=target.tree_kdir, source_tree=target.tree,
                         shipped_module=None, image_deb=None, from_cache=True)
    entries = _entries(cache, target)
    if target.judge_only:  # only the image is served: Debian's module is all there is to judge
        entries = {"shipped": entries["shipped"]}
    keys = _keys(target)
    with cache.lock(f"fetch-{target.key}", wait_message=f"waiting for another run fetching "
                                                       f"{target.key} ..."):
        timings: dict[str, float] = {"download": 0.0, "extract": 0.0}
        downloaded = 0
        missing = [name for name, path in entries.items()
                   if not _entry_current(name, path, keys[name])]
        if "kdir" in entries and "kdir" not in missing:
            _follow_a_moved_cache(entries["kdir"], target)
        if missing:
            _check_tools()
            started = time.monotonic()
            apt = (apt_factory or _target_apt)(cache, target)
            progress("apt index")
            apt.update()
            records = package_records(apt, target)
            needed = _records_for(target, records, missing)
            debs_dir = cache.dir("debs")
            downloaded = sum(r.size for r in needed if not (debs_dir / r.deb_name).exists())
            progress(f"download {downloaded / 1e6:.0f} MB")
            paths = apt.download(needed, cache.dir("debs"), progress)
            by_name = {r.name: path for r, path in zip(needed, paths, strict=True)}
            debs = {asked: by_name[r.name] for asked, r in records.items() if r.name in by_name}
            timings["download"] = time.monotonic() - started
            started = time.monotonic()
            progress(f"extract {', '.join(missing)}")
            _extract_parallel(cache, target, debs, {n: (entries[n], keys[n]) for n in missing})
            timings["extract"] = time.monotonic() - started
        notes = [] if target.judge_only else _kbuild_note(entries["kdir"], target)
        shipped_manifest = read_manifest(entries["shipped"]) or {}
        image = str(shipped_manifest.get("deb", "-"))
        if "-unsigned_" in image and not target.image_package.endswith("-unsigned"):
            notes.append(f"the archive has no signed {target.image_package} "
                         f"{target.package_version}: Debian's module is taken from {image}")
        shipped = _shipped_module(entries["shipped"])
        image_deb = cache.root / "debs" / image
        return Workspace(
            target=target,
            kdir=cache.dir("kdir", target.key) / "root" / "usr" / "src"
            / f"linux-headers-{target.release}",
            source_tree=cache.dir("sources", f"{target.source_package}_{target.package_version}")
            / "tree",
            shipped_module=shipped,
            image_deb=image_deb if image_deb.is_file() else None,
            changelog=next(iter(sorted(entries["shipped"].glob("changelog*"))), None),
            image_package=image.split("_", 1)[0] if image != "-" else "",
            image_sha256=str(shipped_manifest.get("deb_sha256", "")),
            image_module_path=str(shipped_manifest.get("module_path", "")),
            kdir_root=None if target.judge_only else cache.dir("kdir", target.key) / "root",
            timings=timings,
            downloaded_bytes=downloaded,
            from_cache=not missing,
            notes=notes,
        )


def _entry_current(name: str, entry: Path, key: str) -> bool:
    """Complete with this key and unchanged files; a shipped entry also names its package's
    SHA256 and the module's path in it (one extracted before it did is extracted again, once:
    apt checks the deb)."""
    if not entry_is_current(entry, key, CONTENT_CHECK[name]):
        return False
    return name != "shipped" or set(read_manifest(entry) or {}) >= SHIPPED_FACTS


def _target_apt(cache: Cache, target: Target) -> Apt:
    """The host's sources, or the target's own suites on the host's mirrors; a foreign kernel's
    architecture beside the host's."""
    return Apt(cache, suites=target.apt_suites,
               foreign_arches=(target.arch,) if target.foreign else ())


def _kbuild_note(entry: Path, target: Target) -> list[str]:
    for deb in (read_manifest(entry) or {}).get("debs", []):
        if str(deb).startswith(f"{target.kbuild}_") and f"_{target.package_version}_" not in deb:
            return [f"{target.kbuild} {target.package_version} is gone from the archive: built "
                    f"with {deb} (same series)"]
    return []


def _records_for(target: Target, records: dict[str, PackageRecord],
                 missing: list[str]) -> list[PackageRecord]:
    wanted: set[str] = set()
    if "source" in missing:
        wanted.add(target.source_package)
    if "kdir" in missing:
        wanted |= {target.headers_package, target.common_headers_package, target.kbuild}
    if "shipped" in missing:
        wanted.add(target.image_package)
    return [record for name, record in records.items() if name in wanted]


# what unpacking the packages needs on the host (xz: the source tarball, in parallel)
TOOLS = (hostpkg.Tool("dpkg-deb", "dpkg"), hostpkg.Tool("tar", "tar"),
         hostpkg.Tool("xz", "xz-utils"))


def _check_tools() -> None:
    hostpkg.ensure(TOOLS, "fetch tools")


# -- extraction --------------------------------------------------------------------------------
def _extract_source(target: Target, debs: dict[str, Path], entry: Path, key: str) -> None:
    """Only net/smc and include/net/dst.h of the source tarball: xz -T0 decompresses in parallel."""
    deb = debs[target.source_package]
    inner = f"./usr/src/linux-source-{target.series}.tar.xz"
    top = f"linux-source-{target.series}"
    with atomic_dir(entry, key, {"deb": deb.name}, CONTENT_CHECK["source"]) as tmp:
        members = [f"{top}/{m}" for m in SOURCE_MEMBERS]
        script = (
            'set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" | xz -T0 -dc | '
            'tar -x --no-same-owner --wildcards -C "$3" "${@:4}"'
        )
        unpack.run_shell(script, [str(deb), inner, str(tmp), *members], what=f"extract {deb.name}",
                   where=tmp)
        extracted = tmp / top
        if not (extracted / "net" / "smc" / "smc_clc.c").is_file():
            raise ExtractError(f"{deb.name} has no net/smc/smc_clc.c: not a kernel source package?")
        unpack.check_links_inside(tmp)
        extracted.rename(tmp / "tree")


def _extract_kdir(target: Target, debs: dict[str, Path], entry: Path, key: str) -> None:
    names = (target.headers_package, target.common_headers_package, target.kbuild)
    with atomic_dir(entry, key, {"debs": [debs[n].name for n in names]},
                    CONTENT_CHECK["kdir"]) as tmp:
        root = tmp / "root"
        root.mkdir()
        for name in names:
            unpack.run(["dpkg-deb", "-x", str(debs[name]), str(root)],
                       what=f"extract {debs[name].name}", where=tmp)
        _drop_host_links(root)
        unpack.check_links_inside(root)
        _relocate_headers(root, target, final_root=entry / "root")


def _follow_a_moved_cache(entry: Path, target: Target) -> None:
    """A cache copied or moved elsewhere: its headers' Makefile still names the old place, and
    a build would use the old cache's headers. Point it here again (and record the entry's new
    fingerprint), a few milliseconds instead of extracting anew."""
    makefile = entry / "root" / "usr" / "src" / f"linux-headers-{target.release}" / "Makefile"
    text = makefile.read_text()
    here = f"{entry / 'root'}/usr/src/"
    if here in text:
        return
    fixed = re.sub(r"(?m)^(include |KBUILD_OUTPUT\s*:?=\s*)\S*?/root/usr/src/",
                   lambda m: f"{m.group(1)}{here}", text)
    write_atomic(makefile, fixed)
    manifest = read_manifest(entry) or {}
    manifest["content"] = {"mode": CONTENT_CHECK["kdir"],
                           "digest": tree_fingerprint(entry, CONTENT_CHECK["kdir"])}
    write_atomic(entry / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def _relocate_headers(root: Path, target: Target, final_root: Path) -> None:
    """The flavour Makefile names /usr/src/... by absolute path (`include` of the common Makefile;
    on 7.x also KBUILD_OUTPUT): point it at the cache entry's final location (the temp dir is
    renamed there)."""
    makefile = root / "usr" / "src" / f"linux-headers-{target.release}" / "Makefile"
    if not makefile.is_file():
        raise ExtractError(f"{target.headers_package} lacks {makefile.name}: unexpected layout")
    text = makefile.read_text()
    fixed = re.sub(r"(?m)^(include |KBUILD_OUTPUT\s*:?=\s*)/usr/src/",
                   lambda m: f"{m.group(1)}{final_root}/usr/src/", text)
    if fixed == text:
        raise ExtractError(f"{makefile}: no absolute /usr/src include to relocate")
    makefile.write_text(fixed)


def _extract_shipped(target: Target, debs: dict[str, Path], entry: Path, key: str) -> None:
    deb = debs[target.image_package]
    # the deb was just checked against the archive's SHA256 (Apt.download): this is that hash
    facts = {"deb": deb.name, "deb_sha256": hash_file(deb)}
    with atomic_dir(entry, key, facts, CONTENT_CHECK["shipped"]) as tmp:
        # where smc.ko lives in the package ("": none); the manifest is written after this
        facts["module_path"] = images.extract_module(deb, tmp).module_path


def _shipped_module(entry: Path) -> Path | None:
    found = sorted(entry.glob("smc.ko*"))
    return found[0] if found else None


_EXTRACTORS = {"source": _extract_source, "kdir": _extract_kdir, "shipped": _extract_shipped}


def _extract_parallel(cache: Cache, target: Target, debs: dict[str, Path],
                      wanted: dict[str, tuple[Path, str]]) -> None:
    """The entries are independent and each is mostly one single-threaded decompressor."""

    def extract(name: str, entry: Path, key: str) -> None:
        # the source entry is shared by every flavour: lock the entry itself, then look again
        with cache.lock(f"entry-{entry.parent.name}-{entry.name}"):
            if not _entry_current(name, entry, key):
                _EXTRACTORS[name](target, debs, entry, key)

    with ThreadPoolExecutor(max_workers=len(wanted)) as pool, proc.stopped_on_interrupt():
        futures = [pool.submit(extract, name, entry, key)
                   for name, (entry, key) in wanted.items()]
        for future in futures:
            future.result()  # re-raises the first failure; the others' atomic dirs clean up


def _drop_host_links(root: Path) -> None:
    """lib/modules/<rel>/{build,source} point at the host's /usr/src: meaningless here."""
    for link in [*root.glob("lib/modules/*/*"), *root.glob("usr/lib/modules/*/*")]:
        if link.is_symlink() and os.readlink(link).startswith("/"):
            link.unlink()


# -- the whole source tree (debug kernels) -------------------------------------------------------
FULL_SOURCE_RECIPE = 1


def full_source_entry(cache: Cache, target: Target) -> Path:
    """Where the whole linux-source tree of a kernel lives (for debug kernels; verify extracts
    only net/smc)."""
    return cache.dir("kernel-source", f"{target.source_package}_{target.package_version}")


def full_source_key(target: Target) -> str:
    return hash_inputs("full-source", FULL_SOURCE_RECIPE, target.source_package,
                       target.package_version, target.series)


def full_source_present(cache: Cache, target: Target) -> bool:
    return entry_is_current(full_source_entry(cache, target), full_source_key(target))


def full_source(cache: Cache, ws: Workspace, progress: Progress = silent) -> tuple[Path, str]:
    """The whole kernel source tree of the target's linux-source package (Debian's patches
    applied, as the package ships it), extracted once into the cache; the tree and its key.

    The same pipeline as the net/smc extraction (plumbing.unpack: tar's words for hostile
    members refused, links out of the tree refused), without the member filter. The entry's
    files are not fingerprinted on use (80,000 files): its manifest and its top Makefile are
    checked."""
    target = ws.target
    entry, key = full_source_entry(cache, target), full_source_key(target)
    with cache.lock(f"entry-kernel-source-{entry.name}"):
        if not (entry_is_current(entry, key) and (entry / "tree" / "Makefile").is_file()):
            deb = source_deb(cache, ws)
            progress(f"extract the whole {deb.name} (about 1.6 GB)")
            _extract_full_source(target, deb, entry, key)
    return entry / "tree", key


def _extract_full_source(target: Target, deb: Path, entry: Path, key: str) -> None:
    inner = f"./usr/src/linux-source-{target.series}.tar.xz"
    top = f"linux-source-{target.series}"
    with atomic_dir(entry, key, {"deb": deb.name}) as tmp:
        script = ('set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" | xz -T0 -dc | '
                  'tar -x --no-same-owner -C "$3"')
        unpack.run_shell(script, [str(deb), inner, str(tmp)], what=f"extract {deb.name}",
                         where=tmp)
        extracted = tmp / top
        if not (extracted / "Makefile").is_file() or not (extracted / "net" / "smc").is_dir():
            raise ExtractError(f"{deb.name} holds no kernel tree {top}/: not a kernel source "
                               "package?")
        unpack.check_links_inside(tmp)
        extracted.rename(tmp / "tree")


def source_deb(cache: Cache, ws: Workspace) -> Path:
    """The target's linux-source package: the one the net/smc extraction used, or downloaded
    again if it was removed from the cache."""
    target = ws.target
    made = read_manifest(cache.dir("sources", f"{target.source_package}_"
                                             f"{target.package_version}")) or {}
    cached = cache.root / "debs" / str(made.get("deb", "-"))
    if cached.is_file():
        return cached
    apt = _target_apt(cache, target)
    apt.update()
    record = apt.show(target.source_package, target.package_version)
    if record is None:
        raise FetchError(missing_package_message(target.source_package, target.package_version,
                                                 apt.versions(target.source_package)))
    return apt.download([record], cache.dir("debs"))[0]


def image_deb(cache: Cache, ws: Workspace) -> Path:
    """The linux-image package to boot: the cached one, or downloaded again if it was removed."""
    if ws.image_deb is not None and ws.image_deb.is_file():
        return ws.image_deb
    apt = _target_apt(cache, ws.target)
    apt.update()
    record = apt.show(ws.target.image_package, ws.target.package_version)
    if record is None:
        raise BadInput(f"{ws.target.image_package} {ws.target.package_version} is not in the "
                       "archive: no kernel image to boot")
    return apt.download([record], cache.dir("debs"))[0]
