"""smcpatch's modprobe.d file: written atomically and idempotently, refused over another's,
removed only when ours, and it stops every load of smc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.installed import mitigation
from smcpatch.installed.modprobe import decide, read_config
from smcpatch.installed.root import Root
from tests.installed.machine import Machine

OURS = "etc/modprobe.d/smcpatch-cve-2025-40168.conf"


def test_mitigate_writes_once_and_blocks_every_load(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    root = Root.at(machine.root)
    assert mitigation.apply(root, "mitigate").outcome == "written"
    path = machine.root / OURS
    text = path.read_text()
    assert text.startswith(mitigation.MARKER) and "CVE-2025-40168" in text
    assert "install smc /bin/false\nblacklist smc\n" in text
    assert "smcpatch host --unmitigate" in text and oct(path.stat().st_mode & 0o777) == "0o644"
    decision = decide(read_config(root))
    assert not decision.loadable and decision.every_load is not None
    assert decision.every_load.source == f"/{OURS}:9"
    before = path.stat()
    assert mitigation.apply(root, "mitigate").outcome == "unchanged"
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ino == before.st_ino
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_an_older_file_of_ours_is_rewritten_and_removed(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    machine.file(f"/{OURS}", mitigation.EARLIER[0])  # what the previous version wrote
    root = Root.at(machine.root)
    assert mitigation.state(root) == "ours"
    assert mitigation.apply(root, "mitigate").outcome == "written"
    assert mitigation.state(root) == "current"
    assert mitigation.apply(root, "unmitigate").outcome == "removed"
    assert not (machine.root / OURS).exists()
    assert mitigation.apply(root, "unmitigate").outcome == "absent"


@pytest.mark.parametrize("action", ["mitigate", "unmitigate"])
def test_a_file_of_ours_with_lines_added_is_kept_and_the_lines_named(tmp_path: Path,
                                                                    action: str) -> None:
    machine = Machine.make(tmp_path)
    changed = mitigation.CONTENT + "options smc_diag foo=1\ninstall tls /bin/false\n"
    path = machine.file(f"/{OURS}", changed)
    root = Root.at(machine.root)
    assert mitigation.state(root) == "changed"
    assert mitigation.lines_not_ours(changed.encode()) == [
        (11, "options smc_diag foo=1"), (12, "install tls /bin/false")]
    with pytest.raises(BadInput) as caught:
        mitigation.apply(root, action)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and "changed since" in message
    assert "line 11: 'options smc_diag foo=1'" in message and "line 12" in message
    assert path.read_text() == changed  # kept, byte for byte


def test_a_file_of_ours_with_a_line_edited_or_removed_is_kept(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    edited = mitigation.CONTENT.replace("blacklist smc\n", "")
    path = machine.file(f"/{OURS}", edited)
    with pytest.raises(BadInput, match="lines of ours edited or removed"):
        mitigation.apply(Root.at(machine.root), "unmitigate")
    control = mitigation.CONTENT.replace("install smc /bin/false", "install smc /bin/false\x1b[2J")
    path.write_text(control)
    with pytest.raises(BadInput, match=r"line 9: 'install smc /bin/false\\x1b\[2J'"):
        mitigation.apply(Root.at(machine.root), "unmitigate")  # the escape shown, not sent
    assert path.read_text() == control


def test_the_file_is_written_inside_the_root_through_an_absolute_link(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    (machine.root / "etc/modprobe.d").rmdir()
    (machine.root / "etc/modprobe.d").symlink_to("/x")  # the image's /x, made on the way
    root = Root.at(machine.root)
    assert mitigation.apply(root, "mitigate").outcome == "written"
    assert (machine.root / "x" / OURS.rsplit("/", 1)[1]).read_text() == mitigation.CONTENT
    assert not Path("/x").exists()
    assert mitigation.apply(root, "unmitigate").outcome == "removed"
    assert list((machine.root / "x").iterdir()) == []


def test_a_loop_refuses_the_mitigation_and_writes_nothing(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    (machine.root / "etc/modprobe.d").rmdir()
    (machine.root / "etc/modprobe.d").symlink_to("/x")
    (machine.root / "x").symlink_to("/etc/modprobe.d")
    before = machine.snapshot()
    for action in ("mitigate", "unmitigate"):
        with pytest.raises(BadInput, match="symlink loop"):
            mitigation.apply(Root.at(machine.root), action)
    assert machine.snapshot() == before


@pytest.mark.parametrize("action", ["mitigate", "unmitigate"])
def test_a_file_that_is_not_ours_is_refused_and_left_alone(tmp_path: Path, action: str) -> None:
    machine = Machine.make(tmp_path)
    theirs = machine.file(f"/{OURS}", "# the administrator's\ninstall smc /bin/false\n")
    with pytest.raises(BadInput, match="not written by smcpatch"):
        mitigation.check(Root.at(machine.root), action)  # type: ignore[arg-type]
    assert theirs.read_text() == "# the administrator's\ninstall smc /bin/false\n"
    theirs.unlink()
    theirs.symlink_to("/dev/null")  # a mask is the administrator's too
    with pytest.raises(BadInput):
        mitigation.check(Root.at(machine.root), action)  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_directory_we_may_not_write_is_refused_before_any_work(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    (machine.root / "etc/modprobe.d").chmod(0o555)
    with pytest.raises(BadInput, match="cannot create files"):
        mitigation.check(Root.at(machine.root), "mitigate")


def test_a_read_only_place_is_refused_before_any_work(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    (machine.root / "etc/modprobe.d").rmdir()
    (machine.root / "etc/modprobe.d").write_text("a file where a directory should be")
    with pytest.raises(BadInput):
        mitigation.check(Root.at(machine.root), "mitigate")
