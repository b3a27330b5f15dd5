"""The private apt configuration: host sources are read at run time, /etc/apt is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.errors import FetchError
from smcpatch.plumbing.apt import Apt, PackageRecord, _undo_epoch_name
from smcpatch.plumbing.cache import Cache, hash_file
from tests.faults import KERNEL, assert_one_line_error, cli_env, fake_path, inv, leftovers


def _host_dir(tmp_path: Path, uri: str) -> Path:
    host = tmp_path / "etc-apt"
    (host / "sources.list.d").mkdir(parents=True)
    (host / "sources.list.d" / "test.sources").write_text(
        f"Types: deb\nURIs: {uri}\nSuites: bookworm\nComponents: main\nTrusted: yes\n")
    (host / "sources.list.d" / "ignored.list.disabled").write_text("deb http://x y z\n")
    return host


def test_private_config_copies_host_sources(tmp_path: Path) -> None:
    etc_before = hash_file(Path("/etc/apt/sources.list.d/debian.sources")) if Path(
        "/etc/apt/sources.list.d/debian.sources").exists() else None
    apt = Apt(Cache.open(tmp_path / "cache"), host_apt_dir=_host_dir(tmp_path, "http://127.0.0.1:9/d"))
    parts = sorted(p.name for p in (apt.root / "sources.list.d").iterdir())
    assert parts == ["host-test.sources"]
    config = apt.config.read_text()
    assert 'Acquire::Check-Valid-Until "false"' in config
    assert str(apt.root) in config and "/etc/apt" not in config
    if etc_before:
        assert hash_file(Path("/etc/apt/sources.list.d/debian.sources")) == etc_before


def test_a_foreign_arch_gets_its_own_root(tmp_path: Path) -> None:
    cache = Cache.open(tmp_path / "cache")
    host = _host_dir(tmp_path, "http://127.0.0.1:9/d")
    native = Apt(cache, host_apt_dir=host)
    foreign = Apt(cache, host_apt_dir=host, foreign_arches=("s390x", "arm64"))
    assert native.root != foreign.root and foreign.root.name == "apt+arm64+s390x"
    assert "APT::Architectures" not in native.config.read_text()
    assert 'APT::Architectures { "amd64"; "arm64"; "s390x"; };' in foreign.config.read_text()
    lists = foreign.root / "lists"
    (lists / "m_debian_dists_bookworm_main_binary-s390x_Packages.lz4").touch()
    assert foreign.serves_arch("bookworm", "s390x")
    assert not foreign.serves_arch("bookworm-security", "s390x")


def test_an_epoch_in_the_downloaded_name_is_undone(tmp_path: Path) -> None:
    record = PackageRecord("busybox-static:arm64", "1:1.35.0-4+b1",
                           "pool/main/b/busybox/busybox-static_1.35.0-4+b1_arm64.deb", 3, "")
    (tmp_path / "busybox-static_1%3a1.35.0-4+b1_arm64.deb").write_bytes(b"deb")
    _undo_epoch_name(tmp_path, record, tmp_path / record.deb_name)
    assert (tmp_path / record.deb_name).read_bytes() == b"deb"


def test_no_host_sources_is_a_clear_fetch_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError, match="no apt sources found"):
        Apt(Cache.open(tmp_path / "cache"), host_apt_dir=empty)


def test_unreachable_archive_is_a_clear_fetch_error(tmp_path: Path) -> None:
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    apt = Apt(Cache.open(tmp_path / "cache"), host_apt_dir=_host_dir(tmp_path, "http://127.0.0.1:9/d"))
    with pytest.raises(FetchError, match="apt-get update failed"):
        apt.update(force=True)
    assert apt.show("linux-source-6.1", "6.1.176-1") is None
    assert apt.versions("linux-source-6.1") == []


def test_missing_apt_is_named(tmp_path: Path) -> None:
    path = fake_path(tmp_path, lambda n: n.startswith("apt-"))
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"),
               env=cli_env(path))
    assert_one_line_error(proc, "apt-get not found", "--source")


def test_unreachable_archive_is_one_line(tmp_path: Path) -> None:
    """Every request goes to a proxy on loopback port 9, where nothing listens."""
    proxy = "http://127.0.0.1:9"
    env = cli_env(http_proxy=proxy, https_proxy=proxy, HTTP_PROXY=proxy, HTTPS_PROXY=proxy)
    proc = inv("verify", "--kernel", KERNEL, "--cache", str(tmp_path / "cache"), env=env,
               timeout=300)
    assert_one_line_error(proc, "apt-get update failed", "unreachable")
    assert leftovers(tmp_path / "cache") == []


def test_runs_in_parallel_share_the_private_configuration_safely(tmp_path: Path) -> None:
    """Parallel targets made the same apt root's configuration at once: one deleted the file
    the other was reading (FileNotFoundError in 2 of 12 cold runs). Under a lock, written only
    where it changed, each file atomically: never."""
    from concurrent.futures import ThreadPoolExecutor

    from smcpatch.plumbing.cache import Cache

    cache = Cache.open(tmp_path / "cache")
    with ThreadPoolExecutor(max_workers=8) as pool:
        roots = list(pool.map(lambda _: Apt(cache, suites=("bookworm",)).root, range(64)))
    assert len(set(roots)) == 1
    parts = sorted(p.name for p in (roots[0] / "sources.list.d").iterdir())
    assert parts == ["smcpatch-suites.list"]


def test_a_stalled_archive_fails_within_apts_own_timeout(tmp_path: Path, monkeypatch) -> None:
    """A mirror that accepts the connection and never answers (as apt's http method saw when the
    cache's disk filled): apt gives up after Acquire::http::Timeout, one line, no wait for ever."""
    import socket
    import time

    from smcpatch.plumbing import apt as apt_module

    monkeypatch.setattr(apt_module, "HTTP_STALL_S", 2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # accepted by the kernel, never read nor answered
        uri = f"http://127.0.0.1:{server.getsockname()[1]}/d"
        apt = Apt(Cache.open(tmp_path / "cache"), host_apt_dir=_host_dir(tmp_path, uri))
        assert 'Acquire::http::Timeout "2";' in apt.config.read_text()
        started = time.monotonic()
        with pytest.raises(FetchError, match="apt-get update failed") as caught:
            apt.update(force=True)
    assert "\n" not in caught.value.one_line()
    assert time.monotonic() - started < 120


def test_an_apt_call_that_outlives_its_timeout_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """Whatever apt waits on, the call itself has a timeout: the child is killed, one line."""
    apt = Apt(Cache.open(tmp_path / "cache"), host_apt_dir=_host_dir(tmp_path, "http://127.0.0.1:9/d"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\nexec sleep 3017.73\n")
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    with pytest.raises(FetchError, match=r"^apt-get -q download \(is the archive reachable\?\) "
                                         r"timed out after 1 s$"):
        apt._run(["apt-get", "-q", "download", "x"], timeout=1)
