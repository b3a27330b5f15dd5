"""kernels.toml parsing and the selection of targets from --kernel/--flavour."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcpatch.errors import BadInput, ConfigError
from smcpatch.kernels.matrix import load_matrix, select, unmatched
from smcpatch.kernels.targets import arch_of, check_arches, check_flavour, flavours_for
from smcpatch.kernels.versions import parse_version


def test_default_matrix_pins_the_four_kernels() -> None:
    matrix = {t.version: t for t in load_matrix() if t.in_default}
    assert set(matrix) == {"6.1.176", "6.1.192", "6.12.107", "6.12.117"}
    assert all(not t.build_env and not t.apt_suites for t in matrix.values())
    t = matrix["6.12.107"]
    assert t.package_version == "6.12.107-1~deb12u1"
    assert t.release == "6.12.107+deb12-amd64"
    assert t.headers_package == "linux-headers-6.12.107+deb12-amd64"
    assert t.common_headers_package == "linux-headers-6.12.107+deb12-common"
    assert t.kbuild == "linux-kbuild-6.12.107+deb12"
    assert matrix["6.1.176"].kbuild == "linux-kbuild-6.1"
    assert {t.expect for t in matrix.values()} == {"vulnerable", "fixed"}


def test_rt_flavour_uses_common_rt_headers() -> None:
    t = load_matrix()[0].with_flavour("rt-amd64")
    assert t.release == "6.1.0-50-rt-amd64"
    assert t.common_headers_package == "linux-headers-6.1.0-50-common-rt"


def test_extended_matrix_builds_in_the_kernels_own_suite() -> None:
    extended = {t.version: t for t in load_matrix() if not t.in_default}
    assert set(extended) == {"6.12.107+deb13", "6.12.117+deb13", "7.3.4", "7.2.13"}
    trixie = extended["6.12.107+deb13"]
    assert (trixie.build_env, trixie.compiler, trixie.release) == (
        "trixie", "gcc-14", "6.12.107+deb13-amd64")
    assert "trixie" in trixie.apt_suites
    assert extended["7.2.13"].build_env == "sid"


def test_select_by_version_and_flavour() -> None:
    matrix = load_matrix()
    assert len(select(matrix, [], "amd64")) == 4
    assert len(select(matrix, ["all"], "amd64")) == len(matrix) == 8
    assert len(select(matrix, [], "all")) == 12
    chosen = select(matrix, ["6.1.176"], "cloud-amd64")
    assert [t.release for t in chosen] == ["6.1.0-50-cloud-amd64"]
    assert unmatched(matrix, ["6.1.176", "6.1.187"]) == ["6.1.187"]


@pytest.mark.parametrize("bad", ["6.1", "abc", "6.1.176; rm -rf /", ""])
def test_bad_version_is_bad_input(bad: str) -> None:
    with pytest.raises(BadInput, match="not a kernel version"):
        parse_version(bad)


def test_unknown_flavour_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown flavour"):
        select(load_matrix(), [], "arm32")
    with pytest.raises(BadInput, match="'cloud-arm64' is not an amd64 flavour"):
        select(load_matrix(), [], "cloud-arm64")
    with pytest.raises(BadInput, match="s390x has s390x"):
        check_flavour("rt", "s390x")


def test_arches_and_their_flavours() -> None:
    assert check_arches([]) == ("amd64",)
    assert check_arches([], "cloud-arm64") == ("arm64",)  # the flavour names its arch
    assert check_arches(["all"]) == ("amd64", "arm64", "s390x")
    assert check_arches(["s390x", "arm64", "s390x"]) == ("s390x", "arm64")
    with pytest.raises(BadInput, match="unknown architecture 'armhf'"):
        check_arches(["armhf"])
    assert check_flavour("", "arm64") == ("arm64",)
    assert check_flavour("cloud", "arm64") == ("cloud-arm64",)
    assert check_flavour("all", "s390x") == ("s390x",)
    assert flavours_for("rt", ("amd64", "arm64")) == ("rt-amd64", "rt-arm64")


def test_a_foreign_target_names_its_packages() -> None:
    [target] = select(load_matrix(), ["6.1.176"], "cloud", ("arm64",))
    assert (target.arch, target.foreign, target.flavour) == ("arm64", True, "cloud-arm64")
    assert target.release == "6.1.0-50-cloud-arm64"
    assert target.key == "6.1.176-1_cloud-arm64"  # the flavour carries the arch
    assert target.common_headers_package == "linux-headers-6.1.0-50-common"
    assert target.kbuild == "linux-kbuild-6.1"  # the build host's, not the kernel's arch
    assert arch_of("rt-arm64") == "arm64" and arch_of("amd64") == "amd64"
    [native] = select(load_matrix(), ["6.1.176"], "")
    assert (native.arch, native.foreign) == ("amd64", False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[kernel]\nversion=", "not valid TOML"),
        ("[defaults]\n", "no \\[\\[kernel\\]\\] entries"),
        ('[[kernel]]\nversion = "6.1.1"\n', "lacks package_version"),
        ('[[kernel]]\nversion="1.2.3"\npackage_version="1"\nabi="a"\nseries="1.2"\n'
         'flavour="sparc"\n', "unknown flavour"),
    ],
)
def test_malformed_matrix_is_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "kernels.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_matrix(path)


def test_two_user_trees_of_one_release_never_share_a_work_dir(tmp_path: Path) -> None:
    """Stale objects of one tree made another pass: the key names the tree."""
    from smcpatch.kernels.resolve import local_target

    keys = []
    for name in ("a", "b"):
        tree, kdir = tmp_path / name / "linux", tmp_path / name / "build"
        (tree / "net" / "smc").mkdir(parents=True)
        (tree / "net" / "smc" / "smc_clc.c").write_text("/* */\n")
        (kdir / "include" / "generated").mkdir(parents=True)
        (kdir / "include" / "generated" / "utsrelease.h").write_text(
            '#define UTS_RELEASE "6.1.0-50-amd64"\n')
        for needed in ("Makefile", ".config", "Module.symvers"):
            (kdir / needed).write_text("")
        target = local_target(tree, kdir)
        assert target.release == "6.1.0-50-amd64"
        keys.append(target.key)
    assert keys[0] != keys[1]
