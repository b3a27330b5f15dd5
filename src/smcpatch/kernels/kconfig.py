"""The kernel's own build facts: its .config (CONFIG_CC_VERSION_TEXT names the compiler that
built it, CONFIG_ARM64/CONFIG_S390 its architecture) and the toolchain that follows from them
(the same gcc, or Debian's cross gcc of that version for a foreign kernel)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..plumbing import hostpkg
from ..plumbing import proc as children
from ..plumbing.files import MB, read_input
from .targets import HOST_ARCH


@dataclass(frozen=True)
class KernelConfig:
    """The few facts of the kernel's .config that the build depends on."""

    values: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> KernelConfig:
        values: dict[str, str] = {}
        text = read_input(path, "kernel .config", 16 * MB).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value.strip().strip('"')
        return cls(values)

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    @property
    def compiler_command(self) -> str:
        text = self.get("CONFIG_CC_VERSION_TEXT") or "gcc"
        return text.split()[0]

    @property
    def compiler_version(self) -> str:
        text = self.get("CONFIG_CC_VERSION_TEXT") or ""
        return text.split()[-1] if text else ""

    @property
    def needs_pahole(self) -> bool:
        return self.get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y"

    @property
    def arch(self) -> str:
        """The kernel's Debian architecture, from its config (CONFIG_ARM64, CONFIG_S390)."""
        return next((arch for arch, cross in CROSS.items() if self.get(cross.config) == "y"),
                    HOST_ARCH)

    @property
    def cross(self) -> Cross | None:
        """How to build for this kernel from the build host: None when it is the host's arch."""
        return CROSS.get(self.arch) if self.arch != HOST_ARCH else None

    @property
    def build_compiler(self) -> str:
        """The command that builds for this kernel: gcc-12, or the cross aarch64-linux-gnu-gcc-12
        (Debian's cross compilers are the same gcc version, packaged per target)."""
        cross, command = self.cross, self.compiler_command
        if cross is None or command.startswith(cross.prefix):
            return command  # trixie's kernels name their compiler with the triplet already
        return f"{cross.prefix}{command}"


@dataclass(frozen=True)
class Cross:
    """A foreign kernel architecture: Kbuild's ARCH and the GNU triplet of Debian's cross gcc."""

    config: str  # the CONFIG_ symbol that says the kernel is of this arch
    kernel_arch: str  # make ARCH=
    triplet: str  # aarch64-linux-gnu: gcc-12-aarch64-linux-gnu, aarch64-linux-gnu-gcc-12

    @property
    def prefix(self) -> str:
        return f"{self.triplet}-"

    def make_args(self) -> list[str]:
        return [f"ARCH={self.kernel_arch}", f"CROSS_COMPILE={self.prefix}"]


CROSS: dict[str, Cross] = {
    "arm64": Cross("CONFIG_ARM64", "arm64", "aarch64-linux-gnu"),
    "s390x": Cross("CONFIG_S390", "s390", "s390x-linux-gnu"),
}



# -- toolchain ---------------------------------------------------------------------------------
def toolchain_tools(config: KernelConfig) -> list[hostpkg.Tool]:
    """make, the kernel's own compiler (its cross build for a foreign kernel) and, for BTF of
    modules, pahole."""
    compiler = config.build_compiler
    tools = [hostpkg.Tool("make", "make"), hostpkg.Tool(compiler, compiler_package(config))]
    if config.needs_pahole:
        tools.append(hostpkg.Tool("pahole", "dwarves"))
    return tools


def ensure_toolchain(config: KernelConfig, install: bool = True) -> str:
    """The build tools present (installed now when root); the compiler's identity."""
    hostpkg.ensure(toolchain_tools(config), "build tools", install=install)
    return compiler_identity(config.build_compiler)


def compiler_package(config: KernelConfig) -> str:
    """gcc-12, or Debian's cross package gcc-12-aarch64-linux-gnu."""
    match = re.search(r"gcc-(\d+)$", config.compiler_command)
    package = f"gcc-{match.group(1)}" if match else "gcc"
    cross = config.cross
    return f"{package}-{cross.triplet}" if cross else package


def compiler_identity(compiler: str) -> str:
    done = children.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
    return str(done.stdout).splitlines()[0] if done.stdout else compiler
