"""Installed kernels under a root: merged-/usr seen once, the smc.ko modprobe would load, the
package and version dpkg's database names."""

from __future__ import annotations

from pathlib import Path

from smcpatch.installed.kernels import add_packages, dpkg_owners, installed_kernels
from smcpatch.installed.root import Root
from tests.installed.machine import Machine


def test_kernels_of_a_merged_usr_root_are_seen_once_with_their_packages(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    old = machine.kernel("6.1.176-1")
    new = machine.kernel("6.12.117-1~deb12u1")
    root = Root.at(machine.root)
    kernels = installed_kernels(root)
    assert [k.release for k in kernels] == sorted([old, new])
    add_packages(root, kernels)
    by = {k.release: k for k in kernels}
    assert by[old].module == f"/lib/modules/{old}/kernel/net/smc/smc.ko"
    assert by[new].module == f"/lib/modules/{new}/kernel/net/smc/smc.ko.xz"
    assert (by[old].package, by[old].version, by[old].arch) == (
        f"linux-image-{old}", "6.1.176-1", "amd64")
    assert by[new].debian_module and not by[new].builtin


def test_a_non_merged_root_and_usr_lib_modules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "lib/modules/6.1.0-50-amd64/kernel/net/smc").mkdir(parents=True)
    (root / "lib/modules/6.1.0-50-amd64/kernel/net/smc/smc.ko").write_bytes(b"x")
    (root / "usr/lib/modules/6.12.117+deb13-amd64").mkdir(parents=True)
    kernels = installed_kernels(Root.at(root))
    assert [(k.release, k.directory, k.module) for k in kernels] == [
        ("6.1.0-50-amd64", "/lib/modules/6.1.0-50-amd64",
         "/lib/modules/6.1.0-50-amd64/kernel/net/smc/smc.ko"),
        ("6.12.117+deb13-amd64", "/usr/lib/modules/6.12.117+deb13-amd64", None)]


def test_the_module_modules_dep_names_wins_a_dkms_build_in_updates(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    release = machine.kernel("6.1.176-1")
    machine.file(f"/lib/modules/{release}/updates/dkms/smc.ko", b"ours")
    [kernel] = installed_kernels(Root.at(machine.root))
    assert kernel.module == f"/lib/modules/{release}/kernel/net/smc/smc.ko"
    assert "not in modules.dep" not in " ".join(kernel.notes)
    machine.file(f"/lib/modules/{release}/modules.dep", "updates/dkms/smc.ko: kernel/ib_core.ko\n")
    [kernel] = installed_kernels(Root.at(machine.root))
    assert kernel.module == f"/lib/modules/{release}/updates/dkms/smc.ko"
    assert not kernel.debian_module


def test_smc_built_in_and_a_module_depmod_does_not_know(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    machine.file("/lib/modules/6.1.0-9-amd64/modules.builtin", "kernel/net/smc/smc.ko\n")
    machine.file("/lib/modules/6.1.0-9-amd64/modules.dep", "kernel/net/unix/unix.ko:\n")
    machine.file("/lib/modules/6.1.0-9-amd64/extra/smc.ko.zst", b"x")
    [kernel] = installed_kernels(Root.at(machine.root))
    assert kernel.builtin
    assert kernel.module == "/lib/modules/6.1.0-9-amd64/extra/smc.ko.zst"
    assert "depmod" in kernel.notes[0]


def test_dpkg_owners_reads_both_spellings_of_a_merged_usr_path(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    machine.file("/var/lib/dpkg/info/linux-image-7.3-amd64.list",
                 "/usr/lib/modules/7.3-amd64/kernel/net/smc/smc.ko.xz\n")
    machine.file("/var/lib/dpkg/info/libc6:amd64.list", "/usr/lib/x86_64-linux-gnu/libc.so.6\n")
    owners = dpkg_owners(Root.at(machine.root),
                         {"/lib/modules/7.3-amd64/kernel/net/smc/smc.ko.xz", "/boot/none"})
    assert owners == {"/lib/modules/7.3-amd64/kernel/net/smc/smc.ko.xz": "linux-image-7.3-amd64"}


def test_a_kernel_dpkg_does_not_know(tmp_path: Path) -> None:
    machine = Machine.make(tmp_path)
    machine.kernel("6.1.176-1", package=False)
    root = Root.at(machine.root)
    kernels = installed_kernels(root)
    add_packages(root, kernels)
    assert kernels[0].package is None and kernels[0].version is None
