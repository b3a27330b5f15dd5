"""A machine's paths are walked inside its root: absolute links start again at ROOT, `..` stops
at ROOT, a loop is a one-line refusal, and a file's type and size are checked on its descriptor
before anything is read (a FIFO never blocks, a 7 GB sparse file is never read)."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.installed.root import MAX_LINKS, Root


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO opened for reading) fails the test instead of hanging it."""
    def hung(*_: object) -> None:
        raise TimeoutError("a read under the root blocked")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def img(tmp_path: Path) -> Path:
    root = tmp_path / "img"
    (root / "usr/lib/modprobe.d").mkdir(parents=True)
    (root / "etc").mkdir()
    return root


def test_links_are_followed_inside_the_root(img: Path) -> None:
    (img / "lib").symlink_to("/usr/lib")  # absolute: the image's /usr/lib, not the host's
    (img / "etc/up").symlink_to("../../../..")
    machine = Root.at(img)
    assert machine.resolve("/lib/modprobe.d") == img / "usr/lib/modprobe.d"
    assert machine.kind("/lib/modprobe.d") == "dir"
    assert machine.resolve("/etc/up/usr") == img / "usr"  # `..` stops at ROOT
    assert machine.resolve("/../../../etc") == img / "etc"
    assert machine.resolve("/etc/up/../../nothing/../etc") == img / "etc"
    assert not machine.is_host and Root.at(Path("/")).is_host
    assert machine.show("/etc/x") == f"{img}/etc/x"


def test_dot_dot_beyond_the_root_reads_the_roots_own_file(img: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("the host's\n")  # beside the root, one `..` above it
    (img / "secret").write_text("the image's\n")
    (img / "etc/escape").symlink_to("../../secret")
    (img / "etc/deep").symlink_to("../../../../../../../../secret")
    machine = Root.at(img)
    for path in ("/etc/escape", "/etc/deep", "/../secret", "/etc/../../../secret"):
        assert machine.read(path, 100, "a test file") == b"the image's\n", path


def test_an_absolute_link_is_read_as_root_plus_its_target(img: Path, tmp_path: Path) -> None:
    outside = tmp_path / "f"  # on the host, under /tmp: what `modules.builtin -> /tmp/f` names
    outside.write_text("kernel/net/smc/smc.ko\n")
    (img / "modules.builtin").symlink_to(outside)
    machine = Root.at(img)
    assert machine.read("/modules.builtin", 100, "a test file") is None  # ROOT/tmp/... absent
    assert machine.kind("/modules.builtin") is None
    inside = img / str(outside).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("kernel/net/unix/unix.ko\n")
    assert machine.read("/modules.builtin", 100, "a test file") == b"kernel/net/unix/unix.ko\n"
    assert machine.resolve("/modules.builtin") == inside


@pytest.mark.parametrize("path", ["/etc/modprobe.d", "/etc/modprobe.d/x.conf", "/x/y"])
def test_a_loop_is_a_one_line_refusal_never_a_host_path(img: Path, path: str) -> None:
    (img / "etc/modprobe.d").symlink_to("/x")
    (img / "x").symlink_to("/etc/modprobe.d")
    machine = Root.at(img)
    for look in (machine.resolve, machine.kind, machine.listdir,
                 lambda p: machine.read(p, 100, "a test file")):
        with pytest.raises(BadInput, match="symlink loop under the root") as caught:
            look(path)
        assert "\n" not in str(caught.value)
    with pytest.raises(BadInput, match="symlink loop"), \
            machine.directory("/etc/modprobe.d", create=True):
        pass
    assert sorted(p.name for p in img.iterdir()) == ["etc", "usr", "x"]  # nothing made


def test_a_long_chain_of_links_is_refused_like_a_loop(img: Path) -> None:
    (img / "etc/l0").write_text("end\n")
    for n in range(1, MAX_LINKS + 2):
        (img / f"etc/l{n}").symlink_to(f"l{n - 1}")
    machine = Root.at(img)
    assert machine.read(f"/etc/l{MAX_LINKS}", 10, "a test file") == b"end\n"
    with pytest.raises(BadInput, match="symlink loop"):
        machine.read(f"/etc/l{MAX_LINKS + 1}", 10, "a test file")


def test_a_fifo_a_device_and_a_directory_are_never_read_as_files(img: Path) -> None:
    os.mkfifo(img / "etc/fifo")
    (img / "etc/fifo-link").symlink_to("/etc/fifo")
    os.mknod(img / "etc/null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    machine = Root.at(img)
    for path in ("/etc/fifo", "/etc/fifo-link", "/etc/null", "/etc", "/usr/lib/modprobe.d"):
        assert machine.read(path, 100, "a test file") is None, path
    assert machine.kind("/etc/fifo-link") == "other" and machine.kind("/etc") == "dir"


def test_a_7_gb_sparse_file_is_refused_before_it_is_read(img: Path) -> None:
    with open(img / "etc/huge", "wb") as handle:
        handle.truncate(7 * 1024**3)  # sparse: no disk used
    with pytest.raises(BadInput, match=r"7\.0 GB, larger than a kernel module can be") as caught:
        Root.at(img).read("/etc/huge", 256 * 1024 * 1024, "a kernel module")
    assert "\n" not in str(caught.value)


def test_listing_and_walking_stay_inside(img: Path, tmp_path: Path) -> None:
    (tmp_path / "host-dir").mkdir()
    (tmp_path / "host-dir/host-only.conf").write_text("")
    (img / "etc/modprobe.d").symlink_to(tmp_path / "host-dir")  # absolute: re-rooted
    (img / "usr/lib/modprobe.d/a.conf").write_text("")
    (img / "usr/lib/modprobe.d/sub").mkdir()
    (img / "usr/lib/modprobe.d/sub/b.conf").write_text("")
    (img / "usr/lib/modprobe.d/up").symlink_to("/")  # a link to a directory: not entered
    machine = Root.at(img)
    assert machine.listdir("/etc/modprobe.d") == []
    assert machine.listdir("/usr/lib/modprobe.d") == ["a.conf", "sub", "up"]
    assert machine.files_under("/usr/lib/modprobe.d") == ["a.conf", "sub/b.conf", "up"]
    assert machine.files_under("/etc/modprobe.d") == []


def test_directories_are_made_inside_the_root(img: Path, tmp_path: Path) -> None:
    (img / "etc/modprobe.d").symlink_to("/x/y")  # a dangling absolute link
    with Root.at(img).directory("/etc/modprobe.d", create=True) as fd:
        os.close(os.open("made", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    assert (img / "x/y/made").is_file() and not Path("/x/y/made").exists()
    (img / "etc/file").write_text("")
    with pytest.raises(BadInput, match="not a directory"), \
            Root.at(img).directory("/etc/file/sub", create=True):
        pass


def test_nothing_is_below_a_file(img: Path) -> None:
    (img / "etc/file").write_text("x")
    machine = Root.at(img)
    for path in ("/etc/file/x", "/etc/file/..", "/etc/file/../..", "/etc/file/x/../.."):
        assert machine.kind(path) is None and machine.read(path, 10, "a test file") is None
    assert machine.kind("/etc/file") == "file" and machine.kind("//etc/./file") == "file"
