"""`smcpatch host` on fake machines holding Debian's real smc.ko modules: every case of the
exit code (vulnerable and loadable, blacklisted only, blocked, fixed, no SMC, loaded), kmod's
file overrides, --mitigate / --unmitigate (the tree restored byte for byte), JSON and OpenVEX.
The running kernel is faked (installed.runtime.Runtime); the archive too (FakeAdvisor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.commands.host import HostRequest, run
from smcpatch.errors import BadInput
from smcpatch.outputs.vex import VexOutput
from tests.installed.machine import FakeAdvisor, Machine, running

OURS = "/etc/modprobe.d/smcpatch-cve-2025-40168.conf"


def host(machine: Machine, release: str | None = None, advisor: FakeAdvisor | None = None,
         **kwargs: object):  # type: ignore[no-untyped-def]
    loaded = kwargs.pop("loaded", frozenset())
    return run(HostRequest(root=machine.root, **kwargs),  # type: ignore[arg-type]
               runtime=running(release, loaded),  # type: ignore[arg-type]
               advisor=advisor or FakeAdvisor())


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine.make(tmp_path)


def test_a_vulnerable_kernel_that_autoloads_is_exposed(machine: Machine) -> None:
    release = machine.kernel("6.1.176-1")
    advisor = FakeAdvisor()
    result = host(machine, release, advisor)
    [state] = result.kernels
    assert (state.running, state.verdict, state.loaded, state.loadable, state.autoloads) == (
        True, "vulnerable", False, True, True)
    assert (state.kernel.package, state.kernel.version) == (f"linux-image-{release}",
                                                            "6.1.176-1")
    assert result.exit_code == 1 and result.summary.startswith("EXPOSED")
    assert advisor.asked == [release] and state.advice is not None
    assert state.advice.fixed_in == "6.1.187-1"


def test_blacklist_only_still_loads_by_name_so_still_exposed(machine: Machine) -> None:
    release = machine.kernel("6.12.107-1~deb12u1")
    machine.file(f"/lib/modules/{release}/kernel/net/smc/smc_diag.ko.xz", b"")
    machine.modprobe("/etc/modprobe.d/no-smc.conf", "blacklist smc\n")
    [state] = host(machine, release).kernels
    assert state.loadable and not state.autoloads and state.exposed
    assert [b.text for b in state.blocks] == ["blacklist smc"]
    assert any("smc_diag" in note for note in state.notes)


def test_install_bin_false_blocks_every_load(machine: Machine) -> None:
    release = machine.kernel("6.12.107-1~deb12u1")
    machine.modprobe("/etc/modprobe.d/cis.conf", "install smc /bin/false\n")
    result = host(machine, release)
    [state] = result.kernels
    assert state.verdict == "vulnerable" and not state.loadable and not state.exposed
    assert result.exit_code == 0 and result.summary.startswith("not exposed")
    assert "install smc /bin/false (/etc/modprobe.d/cis.conf:1)" in result.summary


def test_a_loaded_vulnerable_smc_is_exposed_even_when_blocked(machine: Machine) -> None:
    release = machine.kernel("6.1.176-1")
    machine.modprobe("/etc/modprobe.d/cis.conf", "install smc /bin/false\n")
    result = host(machine, release, loaded={"smc", "ib_core"})
    [state] = result.kernels
    assert state.loaded is True and not state.loadable and state.exposed
    assert result.exit_code == 1 and "smc is loaded in 6.1.0-50-amd64 (running)" in result.summary
    assert "rmmod smc" in result.summary and "--mitigate" not in result.summary


def test_unknown_loaded_state_of_the_running_kernel_counts_as_loaded(machine: Machine) -> None:
    release = machine.kernel("6.1.176-1")
    machine.modprobe("/etc/modprobe.d/cis.conf", "install smc /bin/false\n")
    assert host(machine, release, loaded=None).exit_code == 1
    assert host(machine, None, loaded=None).exit_code == 0  # not the running kernel


def test_the_running_kernels_own_refusals_count_for_it_only(machine: Machine) -> None:
    now = machine.kernel("6.1.176-1")
    other = machine.kernel("6.12.107-1~deb12u1")
    for runtime in (running(now, cmdline="ro quiet module_blacklist=bluetooth,smc"),
                    running(now, modules_disabled=True)):
        result = run(HostRequest(root=machine.root), runtime=runtime, advisor=FakeAdvisor())
        by = {s.kernel.release: s for s in result.kernels}
        assert not by[now].loadable and by[now].blocks[0].source.startswith("/proc/")
        assert by[other].loadable and result.exit_code == 1  # the next boot may start it


def test_a_module_that_cannot_be_judged_counts_as_vulnerable(machine: Machine) -> None:
    release = machine.kernel("6.1.176-1")
    machine.file(f"/lib/modules/{release}/kernel/net/smc/smc.ko", b"\x7fELF truncated")
    [state] = host(machine, release).kernels
    assert state.verdict == "unknown" and state.exposed and state.reasons


def test_smc_built_into_a_kernel_is_undecided_and_out_of_modprobes_reach(
        machine: Machine) -> None:
    machine.file("/lib/modules/6.1.0-9-custom/modules.builtin", "kernel/net/smc/smc.ko\n")
    machine.modprobe("/etc/modprobe.d/cis.conf", "install smc /bin/false\n")
    advisor = FakeAdvisor()
    result = host(machine, None, advisor)
    [state] = result.kernels
    assert (state.smc, state.verdict, state.loadable, state.exposed) == (
        "builtin", "unknown", True, True)
    assert result.exit_code == 1 and "undecided" in result.summary
    assert advisor.asked == ["6.1.0-9-custom"]


def test_fixed_kernels_and_no_smc_are_not_exposed(machine: Machine) -> None:
    fixed_61 = machine.kernel("6.1.192-2")
    machine.kernel("6.12.117-1~deb12u1")
    machine.kernel_without_smc("7.3.4+bpo-amd64", "7.3.4-1~bpo13+1")
    advisor = FakeAdvisor()
    result = host(machine, fixed_61, advisor)
    assert [(s.kernel.release, s.smc, s.verdict) for s in result.kernels] == [
        ("6.1.0-56-amd64", "module", "fixed"), ("6.12.117+deb12-amd64", "module", "fixed"),
        ("7.3.4+bpo-amd64", "none", "not_affected")]
    assert result.exit_code == 0 and advisor.asked == []
    assert result.summary == "not exposed: no installed kernel has a vulnerable smc.ko"


def test_an_old_vulnerable_kernel_beside_a_fixed_running_one_is_exposed(machine: Machine) -> None:
    old = machine.kernel("6.1.176-1")
    new = machine.kernel("6.1.192-2")
    result = host(machine, new)
    assert result.exit_code == 1 and old in result.summary and "(running" not in result.summary


def test_any_compression_is_judged(machine: Machine) -> None:
    release = machine.kernel("6.12.107-1~deb12u1", compress="gz")
    [state] = host(machine, release).kernels
    assert state.kernel.module is not None and state.kernel.module.endswith("smc.ko.gz")
    assert state.verdict == "vulnerable"


def test_etc_overrides_lib_by_file_name(machine: Machine) -> None:
    release = machine.kernel("6.1.176-1")
    machine.modprobe("/lib/modprobe.d/smc.conf", "install smc /bin/false\n")
    assert host(machine, release).exit_code == 0
    machine.modprobe("/etc/modprobe.d/smc.conf", "# smc allowed here\n")
    result = host(machine, release)
    # kmod 30 reads /lib/modprobe.d (here /usr/lib's)
    assert result.exit_code == 1 and result.config.hidden == ("/lib/modprobe.d/smc.conf",)


def test_mitigate_blocks_and_unmitigate_restores_the_tree_byte_for_byte(machine: Machine) -> None:
    release = machine.kernel("6.1.176-1")
    machine.modprobe("/etc/modprobe.d/other.conf", "options ib_core foo=1\n")
    before = machine.snapshot()
    result = host(machine, release, action="mitigate", loaded={"smc"})
    assert result.change is not None and result.change.outcome == "written"
    [state] = result.kernels
    assert not state.loadable and state.blocks[0].source == f"{OURS}:9"
    assert result.exit_code == 1  # smc is still loaded: nothing is unloaded
    assert any("rmmod smc" in note for note in result.notes)
    assert host(machine, release, action="mitigate").exit_code == 0  # not loaded: blocked
    after = host(machine, release, action="unmitigate")
    assert after.change is not None and after.change.outcome == "removed"
    assert after.exit_code == 1
    assert machine.snapshot() == before


def test_refusals_come_before_any_change(machine: Machine, tmp_path: Path) -> None:
    machine.kernel("6.1.176-1")
    machine.modprobe(OURS, "# mine\ninstall smc /bin/true\n")
    before = machine.snapshot()
    for action in ("mitigate", "unmitigate"):
        with pytest.raises(BadInput, match="not written by smcpatch"):
            host(machine, action=action)
    assert machine.snapshot() == before
    with pytest.raises(BadInput, match="no such file or directory"):
        run(HostRequest(root=tmp_path / "nowhere"), advisor=FakeAdvisor())
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BadInput, match="not a directory"):
        run(HostRequest(root=tmp_path / "a-file"), advisor=FakeAdvisor())


def test_offline_advice_is_one_note_not_an_error(machine: Machine) -> None:
    a = machine.kernel("6.1.176-1")
    machine.kernel("6.12.107-1~deb12u1")
    result = host(machine, a, FakeAdvisor(offline=True))
    assert result.exit_code == 1
    assert [n for n in result.notes if "could not be fetched" in n] == [
        "advice could not be fetched: the archive is unreachable (test)"]
    assert all(s.advice and s.advice.error for s in result.kernels)


def test_json_and_openvex(machine: Machine, tmp_path: Path) -> None:
    vulnerable = machine.kernel("6.1.176-1")
    machine.kernel("6.12.117-1~deb12u1")
    machine.kernel_without_smc("7.3.4+bpo-amd64", "7.3.4-1~bpo13+1")
    machine.modprobe("/etc/modprobe.d/cis.conf", "install smc /bin/false\n")
    out, vex = tmp_path / "host.json", tmp_path / "host.vex.json"
    result = host(machine, vulnerable, json_path=out, vex=VexOutput(vex))
    data = json.loads(out.read_text())
    assert data["schema"] == "smcpatch-host/1" and data["tool_version"]
    assert data["exit_code"] == result.exit_code == 0 and data["exposed"] is False
    assert data["modprobe"]["every_load_blocked_by"] == {
        "text": "install smc /bin/false", "source": "/etc/modprobe.d/cis.conf:1"}
    first = data["kernels"][0]
    assert (first["release"], first["running"], first["verdict"], first["loadable"]) == (
        vulnerable, True, "vulnerable", False)
    assert first["advice"]["fixed_in"] == "6.1.187-1" and len(first["module_sha256"]) == 64
    statements = json.loads(vex.read_text())["statements"]
    assert [s["status"] for s in statements] == ["affected", "fixed", "not_affected"]
    product = statements[0]["products"][0]
    assert product["@id"] == f"pkg:deb/debian/linux-image-{vulnerable}@6.1.176-1?arch=amd64"
    assert product["subcomponents"][0]["@id"].endswith(
        f"#lib/modules/{vulnerable}/kernel/net/smc/smc.ko")
    assert statements[0]["status_notes"].endswith(
        "On this machine: every load of smc is blocked by install smc /bin/false "
        "(/etc/modprobe.d/cis.conf:1)")
    assert "6.1.187-1" in statements[0]["action_statement"]
    assert statements[2]["justification"] == "component_not_present"


# -- the command line ----------------------------------------------------------------------------
def test_cli_bad_input_is_one_line_and_exit_2(machine: Machine, tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, inv

    root = str(machine.root)
    assert_one_line_error(inv("host", "--root", root, "--mitigate", "--unmitigate"), 2,
                          "--mitigate and --unmitigate together")
    assert_one_line_error(inv("host", "--root", str(tmp_path / "none")), 2,
                          "no such file or directory")
    assert_one_line_error(inv("host", "--root", root, "--json", str(tmp_path)), 2,
                          "is a directory")
    machine.modprobe(OURS, "# mine\n")
    assert_one_line_error(inv("host", "--root", root, "--unmitigate"), 2,
                          "not written by smcpatch")


def test_cli_on_a_fixed_machine(machine: Machine, tmp_path: Path) -> None:
    from tests.test_cli import inv

    release = machine.kernel("6.12.117-1~deb12u1")
    out = tmp_path / "h.json"
    proc = inv("host", "--root", str(machine.root), "--json", str(out), "--vex",
               str(tmp_path / "v.json"), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert release in proc.stdout and "not exposed" in proc.stdout
    assert json.loads(out.read_text())["kernels"][0]["verdict"] == "fixed"
    helped = inv("host", "--help")
    assert "--mitigate" in helped.stdout and "default" in helped.stdout
    assert "Exit 0 when" in helped.stdout
