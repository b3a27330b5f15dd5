"""Build-stage helpers that need no kernel: source sync, config reading, toolchain checks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from smcpatch.errors import ToolMissing
from smcpatch.kernels import kconfig
from smcpatch.kernels.kconfig import KernelConfig, ensure_toolchain
from smcpatch.pipeline import build
from smcpatch.pipeline.build import config_fragment, sync_sources
from tests.faults import fake_path


def test_sync_touches_only_changed_files(tmp_path: Path) -> None:
    src, work = tmp_path / "src", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    for name in ("a.c", "b.c", "x.h", "Makefile"):
        (src / name).write_text(name)
    assert sorted(sync_sources(src, work)) == ["Makefile", "a.c", "b.c", "x.h"]
    old = time.time() - 100
    for p in work.iterdir():
        os.utime(p, (old, old))
    (work / "smc.mod.c").write_text("generated")  # modpost output must survive
    (work / "a.o").write_text("object")
    (src / "b.c").write_text("changed")
    assert sync_sources(src, work) == ["b.c"]
    assert (work / "a.c").stat().st_mtime == pytest.approx(old)
    assert (work / "b.c").stat().st_mtime > old + 50
    (src / "x.h").unlink()
    assert sync_sources(src, work) == ["x.h"]
    assert not (work / "x.h").exists()
    assert (work / "smc.mod.c").exists() and (work / "a.o").exists()


def test_kernel_config_facts(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text(
        'CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"\n'
        "CONFIG_SMC=m\n# CONFIG_SMC_LO is not set\nCONFIG_DEBUG_INFO_BTF_MODULES=y\n"
    )
    facts = KernelConfig.read(config)
    assert facts.compiler_command == "x86_64-linux-gnu-gcc-12"
    assert facts.compiler_version == "12.2.0"
    assert facts.needs_pahole
    assert facts.get("CONFIG_SMC") == "m"
    assert facts.get("CONFIG_SMC_LO") is None


@pytest.mark.parametrize(
    ("config", "arch", "command", "package", "make_args"),
    [
        ("CONFIG_X86_64=y\nCONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"",
         "amd64", "gcc-12", "gcc-12", None),
        ("CONFIG_ARM64=y\nCONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"",
         "arm64", "aarch64-linux-gnu-gcc-12", "gcc-12-aarch64-linux-gnu",
         ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]),
        # trixie's kernels name the compiler with its triplet already
        ("CONFIG_S390=y\n"
         "CONFIG_CC_VERSION_TEXT=\"s390x-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0\"",
         "s390x", "s390x-linux-gnu-gcc-14", "gcc-14-s390x-linux-gnu",
         ["ARCH=s390", "CROSS_COMPILE=s390x-linux-gnu-"]),
    ],
)
def test_cross_compiler_from_the_kernel_config(tmp_path: Path, config: str, arch: str,
                                               command: str, package: str,
                                               make_args: list[str] | None) -> None:
    (tmp_path / ".config").write_text(config + "\n")
    facts = KernelConfig.read(tmp_path / ".config")
    assert facts.arch == arch
    assert facts.build_compiler == command
    assert kconfig.compiler_package(facts) == package
    tools = {t.command: t.package for t in kconfig.toolchain_tools(facts)}
    assert tools[command] == package and tools["make"] == "make"
    assert (facts.cross.make_args() if facts.cross else None) == make_args


def test_a_cross_compiler_of_another_revision_is_said(tmp_path: Path) -> None:
    (tmp_path / ".config").write_text(
        'CONFIG_ARM64=y\nCONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"\n')
    facts = KernelConfig.read(tmp_path / ".config")
    # one note, always: where and with what, and how it stands against the kernel's compiler
    note = build._compiler_note(facts, "aarch64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0",
                                build.BuildEnv())
    assert "another Debian revision" in note and note.startswith("cross-built for arm64 with ")
    same = build._compiler_note(facts, "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
                                build.BuildEnv(suite="trixie"))
    assert same.endswith("in a trixie chroot, the kernel's own compiler (CONFIG_CC_VERSION_TEXT)")


def test_missing_compiler_names_the_install_command(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text('CONFIG_CC_VERSION_TEXT="gcc-99 (Debian 99.1) 99.1"\n')
    with pytest.raises(ToolMissing, match=r"apt-get install -y --no-install-recommends gcc-99"):
        ensure_toolchain(KernelConfig.read(config), install=False)


def test_config_fragment_selects_smc_modules() -> None:
    assert config_fragment() == {"CONFIG_SMC": "m", "CONFIG_SMC_DIAG": "m"}


def test_missing_compiler_without_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As root smcpatch installs what's missing; with no apt-get it says what to run instead."""
    monkeypatch.setenv("PATH", fake_path(tmp_path, lambda n: "gcc-12" in n or n == "apt-get"))
    config = KernelConfig({"CONFIG_CC_VERSION_TEXT": "x86_64-linux-gnu-gcc-12 (Debian) 12.2"})
    with pytest.raises(ToolMissing, match="apt-get install -y --no-install-recommends gcc-12"):
        ensure_toolchain(config)
