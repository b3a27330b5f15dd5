"""Faults done for real on real kernels: interruptions, two runs at once, a corrupt cache, a
full disk, a half-applied tree, missing build tools. Each test fails if the behaviour it covers
regresses; the table "fault -> what the user sees -> what is kept" in docs/faults.md names them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smcpatch.pipeline import fetch as sources
from smcpatch.plumbing.cache import TMP_PREFIX, Cache, hash_file
from tests.elfobjs import require_tool
from tests.faults import (
    KERNEL,
    ROOT,
    Run,
    _any,
    _big_download,
    _building_with_objects,
    _df_used,
    _verdicts,
    assert_one_line_error,
    cli_env,
    fake_path,
    inv,
    leftovers,
    locks_are_free,
    seeded_cache,
    target_of,
    warm_test_cache,
)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    command = [require_tool("mount", "mount"), "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.integration
def test_interrupted_at_every_stage_then_resumes_to_the_same_result(tmp_path: Path) -> None:
    """SIGKILL/SIGINT during download, extraction, build and inspection; the next run recovers
    by itself (no stale lock, no half-written entry used) and reaches the same verdicts."""
    shared = warm_test_cache().root
    reference = tmp_path / "reference.json"
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(shared), "--json", str(reference))
    assert proc.returncode == 0, proc.stderr

    # everything but the 70 MB linux-image deb: the first run really downloads it
    cache = seeded_cache(tmp_path / "cache", skip=lambda name: name.startswith("linux-image"))
    image = target_of().image_package

    code, _, _ = Run(cache).kill_when(_big_download(cache), signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not list((cache / "debs").glob(f"{image}_*")), "a partial download was promoted"

    code, out, err = Run(cache).kill_when(_any(cache, f"kdir/{TMP_PREFIX}*"), signal.SIGINT,
                                          settle=1.0)
    assert code == 130, (out[-2000:], err)
    assert "interrupted" in err and "Traceback" not in out + err
    assert not [p for p in leftovers(cache) if "kdir" in str(p) or "sources" in str(p)]
    assert locks_are_free(cache)

    code, _, _ = Run(cache).kill_when(_any(cache, f"sources/{TMP_PREFIX}*"), signal.SIGKILL,
                                      settle=2.0)
    assert code == -signal.SIGKILL

    code, _, _ = Run(cache).kill_when(_building_with_objects(cache), signal.SIGKILL, settle=1.0)
    assert code == -signal.SIGKILL
    assert locks_are_free(cache)  # flock locks die with their holder

    code, out, err = Run(cache).kill_when(_building_with_objects(cache), signal.SIGINT,
                                          settle=1.0)
    assert code == 130, (out[-2000:], err)
    assert not list(cache.glob(f"builds/*/{TMP_PREFIX}*")), "a half-built output was kept"

    # the build is complete: the kill lands in inspection or in the report (both are short)
    code, _, _ = Run(cache).kill_when(_any(cache, "builds/*/out/.complete.json"), signal.SIGKILL)
    assert code in (-signal.SIGKILL, 0)

    result = tmp_path / "result.json"
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(cache), "--json", str(result),
               env=cli_env())
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr)
    assert _verdicts(result) == _verdicts(reference)
    assert leftovers(cache) == []
    assert locks_are_free(cache)
    assert hash_file(next((cache / "debs").glob(f"{image}_*"))) == hash_file(
        next((shared / "debs").glob(f"{image}_{target_of().package_version}_*")))

    # and the run after that is warm: nothing the build did invalidated the cache's entries
    again = tmp_path / "again.json"
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(cache), "--json", str(again))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(again.read_text())["targets"][0]["from_cache"] == {
        "fetch": True, "build": True, "inspect": True}


@pytest.mark.integration
def test_two_runs_on_one_cache_at_once(tmp_path: Path) -> None:
    cache = seeded_cache(tmp_path / "cache")
    runs = [subprocess.Popen(
        [sys.executable, "-m", "invoke", "verify", "--kernel", KERNEL, "--cache", str(cache),
         "--json", str(tmp_path / f"r{i}.json")], cwd=ROOT, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, (out[-3000:], err)
        assert "Traceback" not in out + err
    assert "waiting for another run" in outputs[0][0] + outputs[1][0]
    assert _verdicts(tmp_path / "r1.json") == _verdicts(tmp_path / "r2.json")
    assert _verdicts(tmp_path / "r1.json")["ok"] is True
    assert leftovers(cache) == []
    # exactly one of them extracted and built; the other reused it
    built = [json.loads((tmp_path / f"r{i}.json").read_text())["targets"][0]["from_cache"]
             for i in (1, 2)]
    assert sorted(b["build"] for b in built) == [False, True]


@pytest.mark.integration
def test_altered_extracted_files_are_extracted_again(tmp_path: Path) -> None:
    """An edited source file, a deleted header and a truncated shipped module are noticed by
    their content fingerprints and extracted again from the .debs (no download)."""
    shared = warm_test_cache().root
    cache_root = seeded_cache(tmp_path / "cache")
    target = target_of()
    for part in ("sources", "kdir", "shipped"):  # copies: the shared entries stay intact
        for entry in (shared / part).glob(f"*{target.package_version}*"):
            dest = cache_root / part / entry.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if part == "kdir":  # hard links: unlinking one in the copy leaves the shared one
                subprocess.run(["cp", "-al", str(entry), str(dest)], check=True)
            else:
                shutil.copytree(entry, dest, symlinks=True)
    cache = Cache.open(cache_root)
    ws = sources.fetch(cache, target)
    assert ws.from_cache

    clc = ws.source_tree / "net" / "smc" / "smc_clc.c"
    original = clc.read_bytes()
    clc.write_bytes(original.replace(b"rcu_read_lock", b"rcu_read_LOCK", 1))
    header = ws.kdir / "Makefile"
    common = next(ws.kdir.parent.glob("linux-headers-*-common"))
    victim = common / "include" / "linux" / "skbuff.h"
    victim.unlink()
    assert ws.shipped_module is not None
    shipped = ws.shipped_module.read_bytes()
    ws.shipped_module.write_bytes(shipped[: len(shipped) // 2])

    again = sources.fetch(cache, target)
    assert not again.from_cache
    assert clc.read_bytes() == original
    assert victim.is_file() and header.is_file()
    assert again.shipped_module is not None and again.shipped_module.read_bytes() == shipped
    assert leftovers(cache_root) == []
    assert sources.fetch(cache, target).from_cache


@pytest.mark.integration
def test_truncated_or_altered_deb_is_fetched_again(tmp_path: Path) -> None:
    """apt.py compares a cached .deb's size and SHA256 with the archive's record before use."""
    from smcpatch.plumbing.apt import Apt

    target = target_of()
    cache_root = seeded_cache(tmp_path / "cache", copy=True)
    kbuild = next((cache_root / "debs").glob(f"{target.kbuild}_*"))
    headers = next((cache_root / "debs").glob(f"{target.headers_package}_*"))
    with open(kbuild, "r+b") as handle:
        handle.truncate(kbuild.stat().st_size // 3)
    data = bytearray(headers.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    headers.write_bytes(bytes(data))

    cache = Cache.open(cache_root)
    ws = sources.fetch(cache, target)
    assert (ws.kdir / "Module.symvers").is_file()
    apt = Apt(cache)
    for name, path in ((target.kbuild, kbuild), (target.headers_package, headers)):
        record = apt.show(name, target.package_version)
        assert record is not None
        assert path.stat().st_size == record.size and hash_file(path) == record.sha256


@pytest.mark.integration
def test_disk_full_during_extraction(tmp_path: Path, small_tmpfs: Path) -> None:
    """The cache on a 20 MB tmpfs (the .debs and apt lists elsewhere): the 90 MB headers tree
    does not fit. One line naming the directory; nothing half-written stays on the disk."""
    outside = seeded_cache(tmp_path / "elsewhere")
    for part in ("debs", "apt"):
        (small_tmpfs / part).symlink_to(outside / part)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(small_tmpfs))
    line = assert_one_line_error(proc, "no space left on device", str(small_tmpfs))
    assert any(f"{small_tmpfs}/{part}" in line for part in ("kdir", "sources", "shipped")), line
    assert leftovers(small_tmpfs) == []
    assert not any((small_tmpfs / "kdir").glob("*/.complete.json"))
    assert _df_used(small_tmpfs) < 8_000_000  # the partial headers tree was removed


@pytest.mark.integration
def test_disk_full_during_build(tmp_path: Path, small_tmpfs: Path) -> None:
    """Fetched entries elsewhere, builds on a 20 MB tmpfs: the objects (with DWARF) don't fit."""
    shared = warm_test_cache().root
    for part in ("debs", "apt", "sources", "kdir", "shipped"):
        (small_tmpfs / part).symlink_to(shared / part)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(small_tmpfs))
    line = assert_one_line_error(proc, "no space left on device", f"{small_tmpfs}/builds")
    assert "make" in line or "build" in line, line
    assert leftovers(small_tmpfs) == []
    assert not any(small_tmpfs.glob("builds/*/out"))
    assert not any(small_tmpfs.glob("builds/*/work"))  # the partial objects were removed
    assert _df_used(small_tmpfs) < 8_000_000


@pytest.mark.integration
def test_half_applied_real_tree_is_one_line_error_and_untouched(tmp_path: Path) -> None:
    """A real 6.1.176 tree where one line of the fix was applied by hand: the fix neither applies
    nor reverts. `inv verify --source` says so in one line; the tree is untouched."""
    from tests.pipeline.test_classify import tree_digest

    shared = warm_test_cache()
    ws = sources.fetch(shared, target_of())
    tree = tmp_path / "tree"
    shutil.copytree(ws.source_tree, tree, symlinks=True)
    clc = tree / "net" / "smc" / "smc_clc.c"
    text = clc.read_text()
    line = "\t\trc = smc_clc_prfx_match4_rcu(dst->dev, prop);\n"
    assert text.count(line) == 1
    clc.write_text(text.replace(line, line.replace("dst->dev", "dev")))
    before = tree_digest(tree)
    proc = inv("verify", "--source", str(tree), "--kdir", str(ws.kdir), "--cache",
               str(tmp_path / "cache"))
    assert_one_line_error(proc, "CVE-2025-40168")
    assert tree_digest(tree) == before


@pytest.mark.parametrize(("version", "hidden", "install"), [
    (KERNEL, "make", "apt-get install -y --no-install-recommends make"),
    (KERNEL, "gcc-12", "gcc-12"),
    ("6.12.107", "pahole", "dwarves"),
])
@pytest.mark.integration
def test_missing_build_tool_is_named_with_its_install_command(
        tmp_path: Path, version: str, hidden: str, install: str) -> None:
    shared = warm_test_cache(version).root
    path = fake_path(tmp_path, lambda n: hidden in n or n == "apt-get")
    proc = inv("verify", "--kernel", version, "--cache", str(shared), env=cli_env(path))
    assert_one_line_error(proc, "missing build tools", install)


@pytest.mark.integration
def test_a_copied_cache_builds_against_its_own_headers(tmp_path: Path) -> None:
    """The headers' Makefile names its cache entry by absolute path: a copy of the cache must
    not build against the original's headers (it is pointed at its own place, and stays warm)."""
    shared = warm_test_cache().root
    cache_root = seeded_cache(tmp_path / "cache")
    target = target_of()
    (cache_root / "kdir").mkdir(exist_ok=True)
    for entry in (shared / "kdir").glob(f"*{target.package_version}*"):
        subprocess.run(["cp", "-al", str(entry), str(cache_root / "kdir" / entry.name)],
                       check=True, capture_output=True)
    ws = sources.fetch(Cache.open(cache_root), target)
    makefile = (ws.kdir / "Makefile").read_text()
    assert f"{cache_root}/kdir/" in makefile and f"{shared}/kdir/" not in makefile
    shared_makefile = next((shared / "kdir").glob(f"{target.key}/root/usr/src/*/Makefile"))
    assert f"{shared}/kdir/" in shared_makefile.read_text()  # the original is untouched
    assert sources.fetch(Cache.open(cache_root), target).from_cache


@pytest.mark.integration
def test_cached_results_are_checked_against_what_they_claim(tmp_path: Path) -> None:
    """An edited or truncated inspection result is inspected again (with a note), never an
    internal error or an edited verdict; a module corrupted in place with its size and mtime put
    back is built again (its ctime gives it away)."""
    from smcpatch.pipeline.prepare import verify_target

    cache = Cache.open(seeded_cache(tmp_path / "cache"))
    target = target_of()
    first = verify_target(cache, target)
    assert first.ok and first.after is not None and first.after.verdict == "fixed"

    result = next(cache.root.glob(f"inspect/{target.key}/inspect.json"))
    data = json.loads(result.read_text())
    data["after"]["verdict"] = "vulnerable"
    result.write_text(json.dumps(data))
    again = verify_target(cache, target)
    assert again.after is not None and again.after.verdict == "fixed" and again.ok
    assert any("did not match its digest" in n for n in again.notes)

    result.write_text(result.read_text()[:100])
    assert verify_target(cache, target).after.verdict == "fixed"  # type: ignore[union-attr]

    module = Path(again.after.path)
    st = module.stat()
    data = bytearray(module.read_bytes())
    data[len(data) // 2] ^= 0xFF
    module.write_bytes(bytes(data))
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    rebuilt = verify_target(cache, target)
    assert rebuilt.from_cache.get("build") is False and rebuilt.ok
