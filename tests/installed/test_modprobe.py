"""kmod's configuration as kmod reads it (file order, overrides, continuation lines) and the
decision whether smc loads: every load (install) vs the socket's autoload (blacklist, alias)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.installed.modprobe import (
    FILE_LIMIT,
    KernelIndex,
    ModprobeConfig,
    classify,
    decide,
    fnmatch,
    loads_smc,
    parse,
    read_config,
    softdep_lists,
)
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
        ("install", "smc", "  /bin/false", "/etc/x.conf:4"),  # kmod keeps what follows the
        ("alias", "net_pf_43", "off", "/etc/x.conf:6"),  # one separator after the module
    ]


@pytest.mark.parametrize(("text", "kept"), [
    ("install\vsmc /bin/false\n", []),  # \v, \f, U+00A0 separate nothing: a bad line
    ("install\fsmc /bin/false\n", []),
    ("install\u00a0smc /bin/false\n", []),
    ("install smc\n", []),  # no command: a bad line, not a block
    ("install smc \n", []),
    ("install smc  \n", [("install", "smc", " ")]),  # a command of one space
    ("install\tsmc\t/bin/false\n", [("install", "smc", "/bin/false")]),
    ("install smc /bin/false\r\n", [("install", "smc", "/bin/false\r")]),  # CR kept
    ("blacklist smc\r\n", [("blacklist", "smc\r", "")]),
    ("# c \\\ninstall smc /bin/false\n", []),  # a continued comment swallows the line
    ("ins\\tall smc /bin/false\n", [("install", "smc", "/bin/false")]),  # `\\t` is t
    ("install smc /bin/fals\\", [("install", "smc", "/bin/fals\udcff")]),  # EOF: 0xFF
    ("install smc /bin/false\0 ignored\n", [("install", "smc", "/bin/false")]),
    ("install s]c /bin/false\ninstall s[mc /bin/false\n", []),  # bad brackets
    ("install s[m-n]-c /bin/false\n", [("install", "s[m-n]_c", "/bin/false")]),
    ("alias net-pf-43\n", []), ("options smc\n", []),
    ("options smc a=1\tb=2\n", [("options", "smc", "a=1 b=2")]),  # tabs read as spaces
    ("include /etc/x.conf\nconfig x\n", []),
    ("  blacklist SMC\n", [("blacklist", "SMC", "")]),  # case kept: not smc
])
def test_kmods_tokeniser(text: str, kept: list[tuple[str, str, str]]) -> None:
    assert [(ln.command, ln.name, ln.rest) for ln in parse(text, "/x.conf")] == kept


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
    assert config.files == ("/lib/modprobe.d/10-a.conf",  # kmod 30 reads /lib (/usr/lib here)
                            "/usr/local/lib/modprobe.d/20-b.conf", "/etc/modprobe.d/50-smc.conf",
                            "/run/modprobe.d/99-z.conf")
    assert config.hidden == ("/lib/modprobe.d/50-smc.conf",)
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
    """Without the kernel's index: the softdep's modules taken to resolve (loadable, a note)."""
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf":
                                     "install smc /bin/false\nsoftdep smc pre: ib_core\n"})
    decision = decide(config)
    assert decision.loadable
    assert "softdep" in decision.notes[0]


def test_a_softdep_overrides_the_install_command_only_when_its_modules_resolve(
        tmp_path: Path) -> None:
    machine, config = config_of(tmp_path, {
        "/etc/modprobe.d/x.conf": "install smc /bin/false\nsoftdep smc pre: ib_core\n",
        "/lib/modules/6.1.0-9-amd64/modules.dep": "kernel/net/smc/smc.ko:\n",
        "/lib/modules/6.1.0-9-amd64/modules.alias": "alias net-pf-43 smc\n"})
    kernel = KernelIndex.read(machine, "6.1.0-9-amd64")
    assert not decide(config, (), kernel).loadable  # ib_core is not in this kernel
    (machine.path / "usr/lib/modules/6.1.0-9-amd64/modules.dep").write_text(
        "kernel/net/smc/smc.ko:\nkernel/drivers/ib_core.ko:\n")
    decision = decide(config, (), KernelIndex.read(machine, "6.1.0-9-amd64"))
    assert decision.loadable and decision.by_name.kind == "insmod"


@pytest.mark.parametrize(("rest", "pre", "post"), [
    ("pre: a b post: c", ["a", "b"], ["c"]), ("pre:a", [], []),
    (" pre: a", [], []),  # kmod keeps a leading separator in the first word
    ("\tpost: other", [], []), ("pre: a\vb", ["a", "b"], [])])
def test_softdep_lists_as_kmod_splits_them(rest: str, pre: list[str], post: list[str]) -> None:
    assert softdep_lists(rest) == (pre, post)


def test_a_file_too_large_is_refused_and_a_fifo_too(tmp_path: Path) -> None:
    machine, _ = config_of(tmp_path, {"/etc/modprobe.d/a.conf": "# ok\n"})
    with open(machine.path / "etc/modprobe.d/big.conf", "wb") as handle:
        handle.truncate(FILE_LIMIT + 1)
    with pytest.raises(BadInput, match="big.conf.*larger than a modprobe.d file can be"):
        read_config(machine)
    (machine.path / "etc/modprobe.d/big.conf").unlink()
    os.mkfifo(machine.path / "etc/modprobe.d/f.conf")
    with pytest.raises(BadInput, match="f.conf: not a regular file"):
        read_config(machine)


def test_a_large_file_is_read_whole(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/a.conf": "# padding\n" * 600_000
                                     + "install smc /bin/false\n"})
    assert not decide(config).loadable


def test_file_names_kmod_skips(tmp_path: Path) -> None:
    machine, _ = config_of(tmp_path, {
        "/etc/modprobe.d/a.alias": "blacklist a\n", "/etc/modprobe.d/x.CONF": "blacklist x\n",
        "/etc/modprobe.d/conf": "blacklist c\n", "/etc/modprobe.d/d.conf/e.conf": "x\n",
        "/etc/modprobe.d/b.conf~": "blacklist b\n"})
    assert read_config(machine).files == ("/etc/modprobe.d/a.alias",)


def test_usr_lib_apart_from_lib_is_not_read_by_kmod_30(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/modprobe.d").mkdir(parents=True)
    (root / "lib/modprobe.d").mkdir(parents=True)
    (root / "usr/lib/modprobe.d/smc.conf").write_text("install smc /bin/false\n")
    config = read_config(Root.at(root))
    assert config.files == () and "kmod 30" in config.notes[0]
    assert decide(config).loadable


@pytest.mark.parametrize(("pattern", "name", "hit"), [
    ("sm?", "smc", True), ("s[!x]c", "smc", True), ("s[^m]c", "smc", False),
    ("s[[:alpha:]]c", "smc", True), ("s\\mc", "smc", True), ("SMC", "smc", False),
    ("net_pf_*", "net_pf_43", True), ("s[mc", "smc", False)])
def test_fnmatch_as_glibc(pattern: str, name: str, hit: bool) -> None:
    assert fnmatch(pattern, name) is hit


@pytest.mark.parametrize(("command", "verdict"), [
    ("/bin/false", "blocks"), ("exit 1", "blocks"), (" ", "blocks"),
    ("/bin/true # note", "blocks"), ("/bin/false\r", "unknown"), ("/usr/local/sbin/x", "unknown"),
    ("$(echo modprobe) smc", "unknown"),
    ("/bin/false; /sbin/modprobe --ignore-install smc", "loads"),
    ("/sbin/modprobe --ignore-install smc $CMDLINE_OPTS", "loads")])
def test_classify(command: str, verdict: str) -> None:
    assert classify(command) == verdict


def test_an_unreadable_install_command_counts_as_loadable_with_a_note(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf":
                                     "install smc /usr/local/sbin/smc-policy\n"})
    decision = decide(config)
    assert decision.loadable and "cannot tell" in " ".join(decision.notes)


def test_the_first_install_command_wins_across_files(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/lib/modprobe.d/a.conf": "install smc /bin/false\n",
                                     "/etc/modprobe.d/b.conf": "install smc /bin/true\n"})
    decision = decide(config)
    assert decision.every_load is not None
    assert decision.every_load.source == "/lib/modprobe.d/a.conf:1"


def test_alias_smc_off_redirects_by_name_but_not_the_socket(tmp_path: Path) -> None:
    _, config = config_of(tmp_path, {"/etc/modprobe.d/x.conf": "alias smc off\n"})
    decision = decide(config)
    assert decision.by_name.kind == "none" and decision.by_alias.kind == "insmod"
    assert decision.loadable and decision.autoloads


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
