"""`smcpatch host --root` on hostile roots (issue 25): every path is read inside the root, a loop
or a file too large is a one-line refusal before anything is changed, a FIFO never hangs the
run, an empty root is undecided (exit 2), --vex with nothing to state is refused before any work,
and --unmitigate keeps a file of ours that someone changed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from smcpatch.commands.host import HostRequest, run
from smcpatch.errors import BadInput
from smcpatch.installed import mitigation
from smcpatch.outputs.vex import VexOutput
from smcpatch.plumbing import files
from tests.installed.machine import FakeAdvisor, Machine, running

OURS = "/etc/modprobe.d/smcpatch-cve-2025-40168.conf"
RELEASE = "6.1.0-50-amd64"


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    def hung(*_: object) -> None:
        raise TimeoutError("host blocked on a file under the root")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine.make(tmp_path)


def host(machine: Machine, **kwargs: object):  # type: ignore[no-untyped-def]
    return run(HostRequest(root=machine.root, **kwargs),  # type: ignore[arg-type]
               runtime=running(None), advisor=FakeAdvisor())


def a_kernel(machine: Machine, module: bytes = b"not an ELF file") -> None:
    """A kernel with an smc.ko that cannot be judged (undecided), owned by a package."""
    machine.file(f"/lib/modules/{RELEASE}/kernel/net/smc/smc.ko", module)
    machine.file(f"/lib/modules/{RELEASE}/modules.dep", "kernel/net/smc/smc.ko:\n")
    machine.package(f"linux-image-{RELEASE}", "6.1.176-1",
                    [f"/lib/modules/{RELEASE}/kernel/net/smc/smc.ko"])


# -- green only with evidence --------------------------------------------------------------------
def test_a_root_with_no_kernel_is_undecided_not_green(machine: Machine, tmp_path: Path) -> None:
    before = machine.snapshot()
    for kwargs in ({}, {"action": "mitigate"}, {"json_path": tmp_path / "h.json"}):
        with pytest.raises(BadInput, match="holds no installed kernel.*undecided"):
            host(machine, **kwargs)
    assert machine.snapshot() == before and not (tmp_path / "h.json").exists()
    empty = tmp_path / "not-mounted-yet"
    empty.mkdir()
    with pytest.raises(BadInput, match="holds no installed kernel"):
        run(HostRequest(root=empty), advisor=FakeAdvisor())  # no runtime: not `/`


def test_a_host_directorys_kernel_is_not_the_images(machine: Machine, tmp_path: Path) -> None:
    on_host = tmp_path / "host-modules"
    (on_host / "6.1.0-99-amd64/kernel/net/smc").mkdir(parents=True)
    (on_host / "6.1.0-99-amd64/kernel/net/smc/smc.ko").write_bytes(b"x")
    (machine.root / "usr/lib/modules").rmdir()
    (machine.root / "usr/lib/modules").symlink_to(on_host)  # absolute: the image's own path
    with pytest.raises(BadInput, match="holds no installed kernel"):
        host(machine)


def test_vex_with_nothing_to_state_is_refused_before_any_work(machine: Machine,
                                                              tmp_path: Path) -> None:
    machine.file(f"/lib/modules/{RELEASE}/kernel/net/smc/smc.ko", b"x")  # dpkg knows nothing
    stale, out = tmp_path / "v.json", tmp_path / "h.json"
    stale.write_text('{"an": "older run"}\n')
    before = machine.snapshot()
    with pytest.raises(BadInput, match="no VEX statement to make; nothing written"):
        host(machine, vex=VexOutput(stale), json_path=out, action="mitigate")
    assert stale.read_text() == '{"an": "older run"}\n' and not out.exists()
    assert machine.snapshot() == before  # the mitigation was not written either


def test_host_outputs_go_through_the_one_output_writer(machine: Machine, tmp_path: Path) -> None:
    """host writes --json as every command does (plumbing.files.write_output): a symlink is
    treated exactly as write_output treats it, whatever that rule is."""
    a_kernel(machine)

    def outcome(name: str, write: object) -> tuple[str, str, bool]:
        where = tmp_path / name
        where.mkdir()
        (where / "target.json").write_text("old\n")
        (where / "l.json").symlink_to(where / "target.json")
        try:
            write(where / "l.json")  # type: ignore[operator]
            error = ""
        except BadInput:
            error = "refused"
        return error, (where / "target.json").read_text()[:1], (where / "l.json").is_symlink()

    by_host = outcome("host", lambda p: host(machine, json_path=p))
    by_writer = outcome("writer", lambda p: files.write_output(p, "{}\n"))
    assert by_host == by_writer


# -- the root holds ------------------------------------------------------------------------------
def test_a_symlink_loop_is_refused_and_mitigate_writes_nothing(machine: Machine) -> None:
    a_kernel(machine)
    (machine.root / "etc/modprobe.d").rmdir()
    (machine.root / "etc/modprobe.d").symlink_to("/x")
    (machine.root / "x").symlink_to("/etc/modprobe.d")
    before = machine.snapshot()
    for action in (None, "mitigate", "unmitigate"):
        with pytest.raises(BadInput, match="symlink loop under the root") as caught:
            host(machine, action=action)
        assert "\n" not in str(caught.value)
    assert machine.snapshot() == before


def test_modules_builtin_through_an_absolute_link_is_the_images(machine: Machine,
                                                                tmp_path: Path) -> None:
    machine.file(f"/lib/modules/{RELEASE}/kernel/net/unix/unix.ko", b"")
    host_file = tmp_path / "f"  # the host's /tmp/...: says smc is built in
    host_file.write_text("kernel/net/smc/smc.ko\n")
    (machine.root / f"usr/lib/modules/{RELEASE}/modules.builtin").symlink_to(host_file)
    [state] = host(machine).kernels
    assert (state.kernel.builtin, state.smc, state.verdict) == (False, "none", "not_affected")
    machine.file(str(host_file), "kernel/net/smc/smc.ko\n")  # the image's own /tmp/.../f
    [state] = host(machine).kernels
    assert (state.kernel.builtin, state.smc, state.exposed) == (True, "builtin", True)


def test_a_module_that_resolves_to_a_fifo_does_not_hang(machine: Machine,
                                                        tmp_path: Path) -> None:
    host_side = tmp_path / "fifo"  # on the host: a regular file at the link's target
    host_side.write_bytes(b"\x7fELF host file")
    inside = machine.root / str(host_side).lstrip("/")
    inside.parent.mkdir(parents=True)
    os.mkfifo(inside)  # in the image: a FIFO
    smc = machine.root / f"usr/lib/modules/{RELEASE}/kernel/net/smc/smc.ko"
    smc.parent.mkdir(parents=True)
    smc.symlink_to(host_side)
    machine.file(f"/lib/modules/{RELEASE}/modules.dep", "kernel/net/smc/smc.ko:\n")
    result = host(machine)
    [state] = result.kernels
    # named smc.ko yet nothing to judge: undecided and loadable as far as kmod goes, so exposed
    # (fail closed), never "no SMC"; the FIFO never read
    assert state.smc == "module" and state.verdict == "unknown" and state.exposed
    assert result.exit_code == 1
    assert any("kernel/net/smc/smc.ko is not a regular file (a FIFO, device or directory)" in n
               for n in state.notes)


def test_a_7_gb_sparse_module_is_refused_in_one_line_before_any_change(machine: Machine) -> None:
    a_kernel(machine)
    smc = machine.root / f"usr/lib/modules/{RELEASE}/kernel/net/smc/smc.ko"
    with open(smc, "wb") as handle:
        handle.truncate(7 * 1024**3)
    before = machine.snapshot_names()
    with pytest.raises(BadInput, match=r"smc\.ko: 7\.0 GB, larger than a kernel module") as caught:
        host(machine, action="mitigate")
    assert "\n" not in str(caught.value)
    assert machine.snapshot_names() == before  # not mitigated: refused first


# -- only our own file removed -------------------------------------------------------------------
def test_unmitigate_keeps_a_file_of_ours_with_the_administrators_lines(machine: Machine) -> None:
    a_kernel(machine)
    changed = mitigation.CONTENT + "install tls /bin/false\n"
    path = machine.file(OURS, changed)
    with pytest.raises(BadInput, match="line 11: 'install tls /bin/false'.*kept, not removed"):
        host(machine, action="unmitigate")
    assert path.read_text() == changed


# -- the command line ----------------------------------------------------------------------------
def test_cli_refusals_are_one_line_exit_2(machine: Machine, tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, inv

    root = str(machine.root)
    assert_one_line_error(inv("host", "--root", ""), 2, '--root "": give a directory')
    assert_one_line_error(inv("host", "--root", root), 2, "holds no installed kernel")
    machine.file(f"/lib/modules/{RELEASE}/kernel/net/smc/smc.ko", b"x")  # dpkg names nothing
    stale = tmp_path / "v.json"
    stale.write_text("{}\n")
    proc = inv("host", "--root", root, "--vex", str(stale))
    assert_one_line_error(proc, 2, "no VEX statement to make; nothing written")
    assert "OpenVEX" not in proc.stdout and stale.read_text() == "{}\n"  # nothing announced
    a_kernel(machine)
    machine.file(OURS, mitigation.CONTENT + "options smc foo=1\n")
    assert_one_line_error(inv("host", "--root", root, "--unmitigate"), 2,
                          "line 11: 'options smc foo=1'")
    os.unlink(machine.root / OURS.lstrip("/"))
    (machine.root / "etc/modprobe.d").rmdir()
    (machine.root / "etc/modprobe.d").symlink_to("/x")
    (machine.root / "x").symlink_to("/etc/modprobe.d")
    assert_one_line_error(inv("host", "--root", root, "--mitigate"), 2, "symlink loop")
    assert os.readlink(machine.root / "x") == "/etc/modprobe.d"  # nothing made in its place


def test_the_roots_apt_sources_are_read_inside_it(tmp_path: Path) -> None:
    """apt reads a copy made through the resolver: a link in the image's /etc/apt names the
    image's file, never the host's."""
    from smcpatch.installed.advice import copy_sources
    from smcpatch.installed.root import Root
    from smcpatch.plumbing.apt import host_sources
    from smcpatch.plumbing.cache import Cache

    root = tmp_path / "img"
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text("deb http://192.0.2.1/debian bookworm main\n")
    on_host = tmp_path / "host.list"  # an absolute link to it is re-rooted: not there
    on_host.write_text("deb http://192.0.2.2/debian trixie main\n")
    (root / "etc/apt/sources.list.d/host.list").symlink_to(on_host)
    (root / "etc/apt/sources.list.d/same.list").symlink_to("/etc/apt/sources.list")
    cache = Cache.open(tmp_path / "cache")
    copy = copy_sources(Root.at(root), cache, "root-test")
    assert sorted(p.name for p in (copy / "sources.list.d").iterdir()) == ["same.list"]
    assert {(s.uri, s.suites) for s in host_sources(copy)} == {
        ("http://192.0.2.1/debian", ("bookworm",))}
    assert copy_sources(Root.at(root), cache, "root-test") == copy  # the same copy reused
