"""A machine's paths are read inside its root: absolute links start again at ROOT."""

from __future__ import annotations

from pathlib import Path

from smcpatch.installed.root import Root


def test_links_are_followed_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "img"
    (root / "usr/lib/modprobe.d").mkdir(parents=True)
    (root / "lib").symlink_to("/usr/lib")  # absolute: the image's /usr/lib, not the host's
    (root / "etc").mkdir()
    (root / "etc/loop").symlink_to("loop")
    (root / "etc/up").symlink_to("../../../..")
    machine = Root.at(root)
    assert machine.resolve("/lib/modprobe.d") == root / "usr/lib/modprobe.d"
    assert machine.resolve("/etc/up/usr") == root / "usr"  # `..` stops at ROOT
    assert machine.resolve("/etc/loop/x").name in ("loop", "x")
    assert not machine.is_host and Root.at(Path("/")).is_host
    assert machine.show("/etc/x") == f"{root}/etc/x"
