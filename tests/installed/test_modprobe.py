"""kmod's configuration as kmod reads it (file order, overrides, continuation lines) and the
decision whether smc loads: every load (install) vs the socket's autoload (blacklist, alias)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.installed.modprobe import ModprobeConfig, decide, loads_smc, parse, read_config
from smcpatch.installed.root import Root


def config_of(tmp_path: Path, files: dict[str, str]) -> tuple[Root, ModprobeConfig]:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    machine = Root.at(root)
    return machine, read_config(machine)


def test_parse_joins_continuations_skips_comments_and_reads_dashes_as_underscores() -> None:
    lines = parse("# a comment\n\nblacklist smc-d\ninstall smc \\\n  /bin/false\n"
                  "alias net-pf-43 off extra\n  # indented comment\nbogus\n", "/etc/x.conf")
    assert [(ln.command, ln.name, ln.rest, ln.source) for ln in lines] == [
        ("blacklist", "smc_d", "", "/etc/x.conf:3"),
        ("install", "smc", "/bin/false", "/etc/x.conf:4"),
        ("alias", "net_pf_43", "off", "/etc/x.conf:6"),
    ]


def test_files_in_kmods_order_and_etc_overrides_lib_by_name(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {
        "/lib/modprobe.d/50-smc.conf": "install smc /bin/false\n",
        "/etc/modprobe.d/50-smc.conf": "options smc foo=1\n",
        "/usr/lib/modprobe.d/10-a.conf": "blacklist a\n",
        "/run/modprobe.d/99-z.conf": "blacklist z\n",
        "/etc/modprobe.d/readme.txt": "install smc /bin/false\n",
        "/etc/modprobe.d/.hidden.conf": "install smc /bin/false\n",
        "/usr/local/lib/modprobe.d/20-b.conf": "blacklist b\n",
    })
    assert config.files == ("/usr/lib/modprobe.d/10-a.conf",
                            "/usr/local/lib/modprobe.d/20-b.conf", "/etc/modprobe.d/50-smc.conf",
                            "/run/modprobe.d/99-z.conf")
    assert config.hidden == ("/usr/lib/modprobe.d/50-smc.conf",)
    assert decide(config).every_load is None  # /lib's is overridden


def test_an_etc_file_linked_to_dev_null_masks_the_lib_one(tmp_path: Path) -> None:
    machine, _ = config_of(tmp_path, {"/lib/modprobe.d/smc.conf": "install smc /bin/false\n"})
    (machine.path / "etc/modprobe.d").mkdir(parents=True)
    (machine.path / "etc/modprobe.d/smc.conf").symlink_to("/dev/null")
    config = read_config(machine)
    assert config.files == ("/etc/modprobe.d/smc.conf",)
    assert decide(config).loadable


def test_nothing_configured_loads_and_autoloads(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/lib/modprobe.d/aliases.conf": "alias net-pf-3 off\n"})
    decision = decide(config)
    assert decision.loadable and decision.autoloads


def test_blacklist_stops_the_autoload_only(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf": "blacklist smc\n"})
    decision = decide(config)
    assert decision.loadable and not decision.autoloads
    assert str(decision.autoload) == "blacklist smc (/etc/modprobe.d/x.conf:1)"


@pytest.mark.parametrize("command", ["/bin/false", "/bin/true", "/usr/bin/logger smc; exit 1"])
def test_an_install_command_that_does_not_load_smc_stops_every_load(
        tmp_path: Path, command: str) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf": f"install smc {command}\n"})
    decision = decide(config)
    assert not decision.loadable and decision.every_load is not None
    assert decision.every_load.source == "/etc/modprobe.d/x.conf:1"


def test_install_patterns_and_the_first_match_decide(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {
        "/etc/modprobe.d/10.conf": "install sm[a-z] /sbin/modprobe --ignore-install smc\n",
        "/etc/modprobe.d/20.conf": "install smc /bin/false\n"})
    assert decide(config).loadable  # the first match reloads smc
    _, config = config_of(tmp_path / "b", {"/etc/modprobe.d/10.conf": "install sm* /bin/true\n"})
    assert not decide(config).loadable


def test_a_softdep_for_smc_overrides_its_install_command(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf":
                                     "install smc /bin/false\nsoftdep smc pre: ib_core\n"})
    decision = decide(config)
    assert decision.loadable
    assert "softdep" in decision.notes[0]


def test_net_pf_43_pointed_elsewhere_stops_the_autoload(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf": "alias net-pf-43 off\n"})
    decision = decide(config)
    assert decision.loadable and not decision.autoloads
    assert decision.autoload is not None and decision.autoload.text == "alias net_pf_43 off"
    # an alias that still names smc leaves the decision to the blacklist
    _, config = config_of(tmp_path / "b", {"/etc/modprobe.d/x.conf": "alias net-pf-* smc\n"})
    assert decide(config).autoloads


def test_an_install_command_on_the_alias_itself(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf": "install net-pf-43 /bin/true\n"
                                                               "blacklist smc\n"})
    decision = decide(config)
    assert decision.autoload is not None and decision.autoload.text.startswith("install")


def test_the_kernel_command_lines_modprobe_blacklist(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {})
    decision = decide(config, ("bluetooth", "smc"))
    assert decision.loadable and decision.autoload is not None
    assert decision.autoload.source == "/proc/cmdline"


@pytest.mark.parametrize(("command", "loads"), [
    ("/sbin/modprobe --ignore-install smc $CMDLINE_OPTS", True),
    ("/sbin/insmod /lib/modules/6.1.0-50-amd64/kernel/net/smc/smc.ko", True),
    ("/bin/false", False), ("/sbin/modprobe ib_core", False), ("echo smc is off", False)])
def test_loads_smc(command: str, loads: bool) -> None:
    assert loads_smc(command) is loads
