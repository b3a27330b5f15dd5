"""The fetch stage (smcpatch.pipeline.fetch): hostile packages refused, benign ones extracted,
missing unpacking tools named.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from smcpatch.errors import ExtractError
from smcpatch.pipeline import fetch as sources
from smcpatch.plumbing.cache import MANIFEST, Cache, entry_is_current, hash_file, read_manifest
from tests.faults import (
    HOSTILE,
    KERNEL,
    _assert_refused,
    _deb,
    _hostile_members,
    _tar,
    assert_one_line_error,
    cli_env,
    fake_path,
    inv,
    target_of,
)


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory outside the cache that a hostile archive aims at; must stay as it is."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim").write_text("untouched")
    yield out
    assert sorted(p.name for p in out.iterdir()) == ["victim"], "written outside the cache"
    assert (out / "victim").read_text() == "untouched"


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_headers_deb_is_refused(tmp_path: Path, outside: Path, kind: str) -> None:
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    benign = _deb(tmp_path / "benign.deb", _tar([("file", "./usr/src/README", "hi")]))
    members = [("file", "./usr/src/ok.h", "ok"), *_hostile_members(kind, "./usr/", outside)]
    hostile = _deb(tmp_path / "hostile.deb", _tar(members))
    debs = {target.headers_package: benign, target.common_headers_package: hostile,
            target.kbuild: benign}
    entry = cache.dir("kdir", target.key)
    with pytest.raises(ExtractError) as exc:
        sources._extract_kdir(target, debs, entry, "k")
    _assert_refused(exc, cache.root, "kdir")


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_image_deb_is_refused(tmp_path: Path, outside: Path, kind: str) -> None:
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    prefix = f"./lib/modules/{target.release}/kernel/net/smc/"
    members = [("file", f"{prefix}smc.ko", b"\x7fELF"),
               *_hostile_members(kind, prefix + "smc.ko.", outside)]
    debs = {target.image_package: _deb(tmp_path / "image.deb", _tar(members))}
    with pytest.raises(ExtractError) as exc:
        sources._extract_shipped(target, debs, cache.dir("shipped", target.key), "k")
    _assert_refused(exc, cache.root, "shipped")


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_source_tarball_is_refused(tmp_path: Path, outside: Path, kind: str) -> None:
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    top = f"linux-source-{target.series}/"
    inner = _tar([("file", f"{top}net/smc/smc_clc.c", "int x;\n"),
                  ("file", f"{top}include/net/dst.h", "/* dst */\n"),
                  *_hostile_members(kind, f"{top}net/smc/", outside)], fmt="w:xz")
    data = _tar([("file", f"./usr/src/linux-source-{target.series}.tar.xz", inner)])
    debs = {target.source_package: _deb(tmp_path / "source.deb", data)}
    entry = cache.dir("sources", f"{target.source_package}_{target.package_version}")
    if kind == "absolute":  # tar's member selection (anchored, relative) never picks them
        sources._extract_source(target, debs, entry, "k")
        assert not list(entry.rglob("abs")) and not list(entry.rglob("pwned"))
        return
    with pytest.raises(ExtractError) as exc:
        sources._extract_source(target, debs, entry, "k")
    _assert_refused(exc, cache.root, "sources")


def test_benign_handmade_source_deb_still_extracts(tmp_path: Path) -> None:
    """The same hand-made packages without the hostile member extract fine (no false alarm)."""
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    top = f"linux-source-{target.series}/"
    inner = _tar([("file", f"{top}net/smc/smc_clc.c", "int x;\n"),
                  ("symlink", f"{top}net/smc/link.c", "smc_clc.c"),
                  ("file", f"{top}include/net/dst.h", "/* dst */\n")], fmt="w:xz")
    data = _tar([("file", f"./usr/src/linux-source-{target.series}.tar.xz", inner)])
    debs = {target.source_package: _deb(tmp_path / "source.deb", data)}
    entry = cache.dir("sources", f"{target.source_package}_{target.package_version}")
    sources._extract_source(target, debs, entry, "k")
    assert (entry / "tree" / "net" / "smc" / "smc_clc.c").read_text() == "int x;\n"
    assert entry_is_current(entry, "k", sources.CONTENT_CHECK["source"])


def test_shipped_entry_names_its_package_sha256(tmp_path: Path) -> None:
    """The image's SHA256 and the module's path in it ride in the shipped entry's manifest
    (verify's VEX products carry them); an entry made before they did is not current, so the
    next fetch makes it again."""
    target = target_of()
    cache = Cache.open(tmp_path / "cache")
    prefix = f"./lib/modules/{target.release}/kernel/net/smc/"
    deb = _deb(tmp_path / "image.deb", _tar([("file", f"{prefix}smc.ko", b"\x7fELF")]))
    entry = cache.dir("shipped", target.key)
    sources._extract_shipped(target, {target.image_package: deb}, entry, "k")
    manifest = read_manifest(entry)
    assert manifest is not None and manifest["deb_sha256"] == hash_file(deb)
    assert manifest["module_path"] == f"lib/modules/{target.release}/kernel/net/smc/smc.ko"
    assert sources._entry_current("shipped", entry, "k")
    del manifest["deb_sha256"]
    (entry / MANIFEST).write_text(json.dumps(manifest))
    assert entry_is_current(entry, "k", sources.CONTENT_CHECK["shipped"])  # as older code saw it
    assert not sources._entry_current("shipped", entry, "k")


@pytest.mark.parametrize(("tool", "package"), [("xz", "xz-utils"), ("dpkg-deb", "dpkg")])
def test_missing_extraction_tool_is_named(tmp_path: Path, tool: str, package: str) -> None:
    path = fake_path(tmp_path, lambda n: n in (tool, "apt-get"))
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"),
               env=cli_env(path))
    assert_one_line_error(proc, f"missing fetch tools ({tool})",
                          f"apt-get install -y --no-install-recommends {package}")
