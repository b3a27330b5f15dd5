"""guest.debugkernel without building a kernel: which kernels are refused (before any work), the
fragments and their check, the cache entry's key and completeness, the free-space check. The
fragments applied to a real source tree with `make olddefconfig` are
tests/integration/test_debugkernel.py's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from smcpatch.data import DEBUGKERNEL_DIR
from smcpatch.errors import BadInput, BuildError
from smcpatch.guest import debugkernel
from smcpatch.kernels.targets import Target
from smcpatch.plumbing.cache import MANIFEST

KCSAN, KASAN = debugkernel.SANITIZERS["kcsan"], debugkernel.SANITIZERS["kasan"]
T612 = Target(version="6.12.107", package_version="6.12.107-1~deb12u1", abi="6.12.107+deb12",
              series="6.12", suite="bookworm-security")
T61 = Target(version="6.1.176", package_version="6.1.176-1", abi="6.1.0-50", series="6.1")


def test_an_unknown_sanitizer_is_bad_input() -> None:
    with pytest.raises(BadInput, match="--sanitizer 'tsan': choose kcsan, kasan"):
        debugkernel.sanitizer("tsan")


@pytest.mark.parametrize(("change", "checker", "message"), [
    ({"flavour": "arm64"}, KCSAN, "is arm64: debug kernels are built and booted for the host's"),
    ({"judge_only": True}, KASAN, "serves its image but not its source package"),
    ({"compiler": "gcc-10", "version": "5.10.244"}, KCSAN,
     "kernel 5.10.244 was built with gcc-10; KCSAN needs gcc >= 11"),
    ({"build_env": "trixie", "compiler": "gcc-14"}, KASAN, "builds in a trixie chroot"),
])
def test_kernels_no_debug_kernel_can_be_built_for_are_refused(
        change: dict[str, object], checker: debugkernel.Sanitizer, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        debugkernel.check_target(dataclasses.replace(T612, **change), checker)  # type: ignore[arg-type]


def test_gcc_10_is_enough_for_kasan_and_gcc_12_for_both() -> None:
    debugkernel.check_target(dataclasses.replace(T612, compiler="gcc-10"), KASAN)
    for checker in (KCSAN, KASAN):
        debugkernel.check_target(T612, checker)
    assert debugkernel.gcc_major("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0") == 12
    assert debugkernel.gcc_major("clang") is None


def test_the_fragments_in_merge_order() -> None:
    names = [p.name for p in debugkernel.fragments(KCSAN, "6.12")]
    assert names == ["base.config", "kcsan.config"]
    # 6.1's own difference is merged in the same call (merged later, AUTOFS_FS stayed y)
    names = [p.name for p in debugkernel.fragments(KASAN, "6.1")]
    assert names == ["base.config", "base-6.1.config", "kasan.config"]


def test_what_the_fragments_ask_for() -> None:
    kcsan = debugkernel.wanted_options(debugkernel.fragments(KCSAN, "6.12"))
    assert kcsan["CONFIG_KCSAN"] == "y" and kcsan["CONFIG_KASAN"] == "n"
    assert kcsan["CONFIG_SMC"] == "m" and kcsan["CONFIG_DEBUG_INFO_NONE"] == "y"
    assert kcsan["CONFIG_KCSAN_ASSUME_PLAIN_WRITES_ATOMIC"] == "y"
    assert kcsan["CONFIG_KCSAN_REPORT_VALUE_CHANGE_ONLY"] == "y"
    assert kcsan["CONFIG_KCSAN_REPORT_RACE_UNKNOWN_ORIGIN"] == "y"
    assert kcsan["CONFIG_LOCALVERSION"] == '"-smcdbg-kcsan"'
    assert kcsan["CONFIG_WERROR"] == "n"  # =n in a fragment asks for it off
    kasan = debugkernel.wanted_options(debugkernel.fragments(KASAN, "6.1"))
    assert kasan["CONFIG_KASAN_INLINE"] == "y" and kasan["CONFIG_PROVE_RCU"] == "y"
    assert kasan["CONFIG_KCSAN"] == "n" and kasan["CONFIG_AUTOFS4_FS"] == "n"
    assert set(debugkernel.NAMES) == {p.stem for p in DEBUGKERNEL_DIR.glob("k*.config")}


def test_a_silently_dropped_option_is_a_problem() -> None:
    wanted = {"CONFIG_KCSAN": "y", "CONFIG_AUTOFS_FS": "n", "CONFIG_SMC": "m",
              "CONFIG_NOPE": "y"}
    config = ("CONFIG_KCSAN=y\nCONFIG_AUTOFS_FS=y\nCONFIG_SMC=m\n# CONFIG_KASAN is not set\n")
    problems = debugkernel.config_problems(config, wanted, known={"CONFIG_KCSAN",
                                                                   "CONFIG_AUTOFS_FS",
                                                                   "CONFIG_SMC"})
    assert problems == ["CONFIG_AUTOFS_FS: asked n, .config has y",
                        "CONFIG_NOPE: no Kconfig of this source defines it (asked y)"]
    # an option asked off that the .config does not mention at all is off
    assert debugkernel.config_problems("", {"CONFIG_DRM": "n"}) == []


def test_kconfig_symbols_are_read_from_the_tree(tmp_path: Path) -> None:
    (tmp_path / "net" / "smc").mkdir(parents=True)
    (tmp_path / "net" / "smc" / "Kconfig").write_text(
        "config SMC\n\ttristate \"SMC\"\nmenuconfig SMC_LO\n\tbool\n")
    assert debugkernel.kconfig_symbols(tmp_path) == {"CONFIG_SMC", "CONFIG_SMC_LO"}


def test_the_key_follows_the_fragments_the_make_variables_and_the_compiler() -> None:
    key = debugkernel.entry_key(T612, KCSAN, "gcc-12 (Debian 12.2.0-14) 12.2.0", "src1")
    assert key == debugkernel.entry_key(T612, KCSAN, "gcc-12 (Debian 12.2.0-14) 12.2.0", "src1")
    assert key != debugkernel.entry_key(T612, KASAN, "gcc-12 (Debian 12.2.0-14) 12.2.0", "src1")
    assert key != debugkernel.entry_key(T612, KCSAN, "gcc-12 (Debian 12.2.0-15) 12.2.0", "src1")
    assert key != debugkernel.entry_key(T612, KCSAN, "gcc-12 (Debian 12.2.0-14) 12.2.0", "src2")
    other = dataclasses.replace(KCSAN, kernel_make_args=("KCSAN_SANITIZE=n",))
    assert key != debugkernel.entry_key(T612, other, "gcc-12 (Debian 12.2.0-14) 12.2.0", "src1")


def _entry(tmp_path: Path, key: str, release: str = "6.12.107-smcdbg-kcsan") -> Path:
    entry = tmp_path / "entry"
    build = entry / "build"
    (build / "arch" / "x86" / "boot").mkdir(parents=True)
    for name in ("arch/x86/boot/bzImage", "Module.symvers", ".config", "Makefile"):
        (build / name).write_text("x")
    (entry / "modroot" / "lib" / "modules" / release).mkdir(parents=True)
    (entry / "modroot" / "lib" / "modules" / release / "modules.dep").write_text("")
    (entry / MANIFEST).write_text(json.dumps({"key": key, "release": release}))
    return entry


def test_an_entry_is_complete_only_with_its_key_and_its_files(tmp_path: Path) -> None:
    entry = _entry(tmp_path, "k1")
    assert debugkernel.complete(entry, "k1")
    assert not debugkernel.complete(entry, "k2")
    (entry / "build" / "Module.symvers").unlink()  # a module build needs it
    assert not debugkernel.complete(entry, "k1")
    assert not debugkernel.complete(tmp_path / "absent", "k1")


def fake_compiler(where: Path) -> str:
    """A compiler command that only answers --version as the kernel's gcc-12 does: these tests
    never compile, and a fresh machine has no plain `gcc` before a build installs it."""
    script = where / "gcc-12"
    script.write_text('#!/bin/sh\necho "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"\n')
    script.chmod(0o755)
    return str(script)


def test_a_complete_entry_is_reused_without_building(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from smcpatch.plumbing.cache import Cache

    cache = Cache.open(tmp_path / "cache")
    cc = fake_compiler(tmp_path)
    compiler = debugkernel._compiler_identity(cc)
    assert compiler == "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
    key = debugkernel.entry_key(T612, KCSAN, compiler, "srckey")
    entry = debugkernel.entry_dir(cache, T612, KCSAN)
    entry.parent.mkdir(parents=True, exist_ok=True)
    _entry(tmp_path, key).rename(entry)
    manifest = json.loads((entry / MANIFEST).read_text())
    (entry / MANIFEST).write_text(json.dumps({**manifest, "source_key": "srckey", "cc": cc,
                                              "compiler": compiler, "objects": 1955}))
    monkeypatch.setattr(debugkernel.hostpkg, "ensure", lambda *a, **k: None)

    def no_source() -> tuple[Path, str]:
        raise AssertionError("a complete entry needs no source tree")

    got = debugkernel.ensure(cache, T612, KCSAN, cc, no_source, source_present=False)
    assert got.from_cache and got.release == "6.12.107-smcdbg-kcsan" and got.objects == 1955
    assert got.guest_kernel().modules_root == entry / "modroot"
    assert got.module_make_args == (f"CC={cc}", "KCSAN_SANITIZE=n", "KCSAN_SANITIZE_smc_clc.o=y")


def test_not_enough_disk_says_how_much_is_needed(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"it needs about 1000000\.0 GB, .* GB are free"):
        debugkernel.free_space_check(tmp_path, 1e15, "the KCSAN debug build")
    debugkernel.free_space_check(tmp_path, 1.0, "a tiny thing")


def test_make_objects_are_counted_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("  SYNC    include/config/auto.conf.cmd\n  CC      kernel/fork.o\n"
                   "  AS      arch/x86/entry/entry_64.o\n  CC [M]  net/smc/af_smc.o\n"
                   "  LD [M]  net/smc/smc.ko\n  HOSTCC  scripts/kallsyms\n")
    assert debugkernel._objects(log) == 3


def _ensure_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 step: object) -> tuple[Path, object]:
    """ensure() with every make/merge/depmod step replaced by `step(args, log)`."""
    from smcpatch.plumbing.cache import Cache

    cache = Cache.open(tmp_path / "cache")
    tree = tmp_path / "src"
    (tree / "net" / "smc").mkdir(parents=True)
    (tree / "Kconfig").write_text("".join(f"config {name[7:]}\n" for name in
                                          debugkernel.wanted_options(
                                              debugkernel.fragments(KCSAN, "6.12"))))
    monkeypatch.setattr(debugkernel.hostpkg, "ensure", lambda *a, **k: None)
    monkeypatch.setattr(debugkernel, "_run", lambda args, log, cwd: step(args, log))  # type: ignore[operator]
    entry = debugkernel.entry_dir(cache, T612, KCSAN)

    def run() -> object:
        return debugkernel.ensure(cache, T612, KCSAN, fake_compiler(tmp_path),
                                  lambda: (tree, "srckey"), True)

    return entry, run


def test_a_config_that_lost_an_option_fails_and_keeps_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def step(args: list[str], log: Path) -> None:
        log.open("a").write("$ " + " ".join(args) + "\n")
        if args[-1] == "olddefconfig":  # Kconfig kept KASAN's opposite: KCSAN dropped
            wanted = debugkernel.wanted_options(debugkernel.fragments(KCSAN, "6.12"))
            text = "".join(f"{k}={v}\n" for k, v in wanted.items() if v != "n")
            (log.parent / "build" / ".config").write_text(text.replace("CONFIG_KCSAN=y\n", ""))

    entry, run = _ensure_with(tmp_path, monkeypatch, step)
    with pytest.raises(BuildError, match=r"lost 1 option\(s\) the fragments ask for: "
                                         r"CONFIG_KCSAN: asked y, \.config has n") as caught:
        run()  # type: ignore[operator]
    assert "6.12.107-1~deb12u1_kcsan.failed.log" in str(caught.value)
    assert (entry.parent / "6.12.107-1~deb12u1_kcsan.failed.log").is_file()
    assert not entry.exists() and [p.name for p in entry.parent.iterdir()] == [
        "6.12.107-1~deb12u1_kcsan.failed.log"]  # no temp dir left either


def test_an_interrupted_build_leaves_nothing_a_rerun_trusts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def step(args: list[str], log: Path) -> None:
        (log.parent / "build" / "half.o").write_text("half")
        if "bzImage" in args:
            raise KeyboardInterrupt  # Ctrl-C in the middle of make

    def configured(args: list[str], log: Path) -> None:
        if args[-1] == "olddefconfig":
            wanted = debugkernel.wanted_options(debugkernel.fragments(KCSAN, "6.12"))
            (log.parent / "build" / ".config").write_text(
                "".join(f"{k}={v}\n" for k, v in wanted.items() if v != "n"))
        step(args, log)

    entry, run = _ensure_with(tmp_path, monkeypatch, configured)
    with pytest.raises(KeyboardInterrupt):
        run()  # type: ignore[operator]
    assert not entry.exists() and list(entry.parent.iterdir()) == []
