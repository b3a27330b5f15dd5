"""Debug kernels: the target's own Debian source (the linux-source package, Debian's patches
included) built with a checker Debian's kernels do not have, KCSAN or KASAN with lockdep, for
`race --sanitizer` (docs/race.md, "Debug kernels: KCSAN and KASAN").

The config is small and made for the race's guest: `x86_64_defconfig` + `kvm_guest.config`, then
one `merge_config.sh` call with data/debugkernel/base.config, base-<series>.config (when there is
one: 6.1) and the checker's fragment, then `olddefconfig`; every option a fragment asks for is
checked to have survived (Kconfig drops what it cannot have, silently). The kernel is built out of
tree (`O=`) in a temp dir under the cache and renamed into place when complete (a Kbuild `O=` dir
keeps working for later `make -C <dir> M=...` builds after a rename: measured; its Makefile names
only the source tree, which stays put). A cache entry: the build dir, its bzImage, the PVH
vmlinux, and the `modules_install` tree (depmod run), keyed by the source package, the fragments,
the make variables and the compiler.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data import DEBUGKERNEL_DIR
from ..errors import BadInput, BuildError
from ..kernels.targets import Target
from ..plumbing import hostpkg, proc
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_inputs, read_manifest
from ..plumbing.files import write_atomic
from ..plumbing.progress import Poller, Progress, silent
from .kernel import GuestKernel, extract_pvh_vmlinux

# Bump when the way a debug kernel is built changes, so old entries are rebuilt.
RECIPE = 1
GB = 1e9
SOURCE_BYTES = 1.7 * GB  # the whole linux-source tree (measured: 1.6 GB for 6.12)
MARGIN_BYTES = 0.3 * GB
# make's objects for one build (measured: 1,915 for 6.12, 1,807 for 6.1): the progress bar's
# denominator, never a promise
EXPECTED_OBJECTS = 1900
BUILD_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class Sanitizer:
    """A checker a debug kernel is built with, and how the race boots and runs it."""

    name: str  # kcsan | kasan: the value of --sanitizer
    title: str  # what the table calls the kernel
    fragment: str  # data/debugkernel/<fragment>
    kernel_make_args: tuple[str, ...]  # on every make line of the kernel's build dir
    module_make_args: tuple[str, ...]  # on the M= line of the SMC module
    boot_params: tuple[str, ...]  # on the kernel command line
    run_params: dict[str, str]  # written to /sys/module/<name>/parameters during the churn only
    min_gcc: int  # the oldest gcc the checker builds with (its Kconfig's compiler test)
    build_bytes: float  # the build dir's size (measured), for the free-space check
    checkers: tuple[str, ...] = field(default=())  # what the kernel checks, said in the report


SANITIZERS: dict[str, Sanitizer] = {
    "kcsan": Sanitizer(
        name="kcsan", title="KCSAN debug build", fragment="kcsan.config",
        # the runtime is built; of the core only net/core/dst.o (dst_dev_put(), the writer) is
        # instrumented, so reports name both sides, and the core's accesses do not eat the
        # sampling (a per-object variable wins over KCSAN_SANITIZE=n: scripts/Makefile.lib)
        kernel_make_args=("KCSAN_SANITIZE=n", "KCSAN_SANITIZE_dst.o=y"),
        # only the object under test: smc_clc.o (smc_clc_prfx_match and its siblings)
        module_make_args=("KCSAN_SANITIZE=n", "KCSAN_SANITIZE_smc_clc.o=y"),
        boot_params=(),
        run_params={"udelay_task": "2000"},
        min_gcc=11, build_bytes=0.6 * GB,
        checkers=("KCSAN: data races between instrumented accesses (smc_clc.o of the module, "
                  "net/core/dst.o of the kernel), and reads whose value changed under a watch "
                  "(race at unknown origin); default sampling, kcsan.udelay_task=2000 during "
                  "the churn only",)),
    "kasan": Sanitizer(
        name="kasan", title="KASAN+lockdep debug build", fragment="kasan.config",
        kernel_make_args=(), module_make_args=(),
        # 5-level paging off: an early-boot KASAN report in do_raw_spin_lock came in 3 of 18
        # boots with it (-cpu max offers LA57), 0 of 6 without; such a report switches lockdep off
        boot_params=("no5lvl",),
        run_params={},
        min_gcc=8, build_bytes=0.9 * GB,
        checkers=("KASAN (generic, inline): out-of-bounds and use-after-free accesses, kernel "
                  "and module instrumented",
                  "lockdep (PROVE_LOCKING, PROVE_RCU): lock order, RCU usage",
                  "DEBUG_ATOMIC_SLEEP: sleeping in atomic context",
                  "no5lvl: 4-level paging (an early-boot KASAN report came with 5-level)")),
}
NAMES = tuple(SANITIZERS)


def sanitizer(name: str) -> Sanitizer:
    try:
        return SANITIZERS[name]
    except KeyError:
        raise BadInput(f"--sanitizer {name!r}: choose {', '.join(NAMES)}") from None


# -- what can be built ----------------------------------------------------------------------------
def check_target(target: Target, checker: Sanitizer) -> None:
    """Refuse, before any work, a kernel no debug kernel can be built for."""
    what = f"kernel {target.version}"
    if target.foreign:
        raise BadInput(f"{what} is {target.arch}: debug kernels are built and booted for the "
                       "host's architecture (amd64) only")
    if target.judge_only or target.tree is not None:
        raise BadInput(f"{what}: the archive serves its image but not its source package: no "
                       "debug kernel can be built from Debian's source")
    major = gcc_major(target.compiler)
    if major is not None and major < checker.min_gcc:
        raise BadInput(f"{what} was built with gcc-{major}; {checker.name.upper()} needs gcc >= "
                       f"{checker.min_gcc}: no {checker.title} of it")
    if target.build_env:
        raise BadInput(f"{what} builds in a {target.build_env} chroot ({target.compiler}): debug "
                       "kernels are built with the host's compiler only")


def gcc_major(compiler: str) -> int | None:
    """12 of gcc-12 or of `gcc-12 (Debian 12.2.0-14) 12.2.0`; None when no version is named."""
    match = re.search(r"gcc-(\d+)", compiler)
    return int(match.group(1)) if match else None


# -- the config --------------------------------------------------------------------------------
def fragments(checker: Sanitizer, series: str) -> list[Path]:
    """The fragments merged in one call, in order: base, base-<series> (if any), the checker's."""
    extra = DEBUGKERNEL_DIR / f"base-{series}.config"
    return [DEBUGKERNEL_DIR / "base.config", *([extra] if extra.is_file() else []),
            DEBUGKERNEL_DIR / checker.fragment]


_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def read_options(text: str, fragment: bool) -> dict[str, str]:
    """CONFIG_X -> value of a .config or a fragment; "n" for `# CONFIG_X is not set` (and, in
    a fragment, for `=n`)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _SET.match(line):
            name, value = match.groups()
            values[name] = "n" if fragment and value == "n" else value
        elif match := _UNSET.match(line):
            values[match.group(1)] = "n"
    return values


def wanted_options(paths: list[Path]) -> dict[str, str]:
    """What the fragments ask for, later ones overriding earlier ones (as merge_config.sh)."""
    wanted: dict[str, str] = {}
    for path in paths:
        wanted.update(read_options(path.read_text(), fragment=True))
    return wanted


def config_problems(config_text: str, wanted: dict[str, str],
                    known: set[str] | None = None) -> list[str]:
    """One line per option the config does not hold as asked (dropped by Kconfig: a dependency
    missing, selected by another option) or that no Kconfig file defines (`known`)."""
    have = read_options(config_text, fragment=False)
    problems = []
    for name, want in wanted.items():
        if known is not None and name not in known:
            problems.append(f"{name}: no Kconfig of this source defines it (asked {want})")
        elif have.get(name, "n") != want:
            problems.append(f"{name}: asked {want}, .config has {have.get(name, 'n')}")
    return problems


def kconfig_symbols(srctree: Path) -> set[str]:
    """Every CONFIG_ symbol some Kconfig file of the tree defines."""
    names: set[str] = set()
    pattern = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)", re.M)
    for path in srctree.rglob("Kconfig*"):
        if path.is_file():
            names.update("CONFIG_" + s for s in pattern.findall(path.read_text(errors="replace")))
    return names


# -- the cache entry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DebugKernel:
    """A built debug kernel: boot it with `guest_kernel()`, build modules with
    `make -C build_dir M=... <module_make_args>`."""

    checker: Sanitizer
    release: str
    entry: Path
    compiler: str  # the compiler's --version line
    cc: str  # the CC= of every make line
    seconds: float  # the build's wall time (0 when it came from the cache)
    objects: int  # objects make compiled
    from_cache: bool
    fragment: str  # the fragments as merged (their text)

    @property
    def build_dir(self) -> Path:
        return self.entry / "build"

    @property
    def bzimage(self) -> Path:
        return self.build_dir / "arch" / "x86" / "boot" / "bzImage"

    @property
    def modules_root(self) -> Path:
        return self.entry / "modroot"

    @property
    def config(self) -> Path:
        return self.build_dir / ".config"

    @property
    def module_make_args(self) -> tuple[str, ...]:
        return (f"CC={self.cc}", *self.checker.module_make_args)

    def guest_kernel(self) -> GuestKernel:
        pvh = self.entry / "vmlinux.pvh"
        return GuestKernel(release=self.release, vmlinuz=self.bzimage,
                           modules_root=self.modules_root,
                           pvh_vmlinux=pvh if pvh.is_file() else None)


def entry_dir(cache: Cache, target: Target, checker: Sanitizer) -> Path:
    return cache.dir("debug-kernels", f"{target.package_version}_{checker.name}")


def entry_key(target: Target, checker: Sanitizer, compiler: str, source_key: str) -> str:
    """Source version + the fragments' text + the make variables + the compiler."""
    return hash_inputs("debug-kernel", RECIPE, target.source_package, target.package_version,
                       source_key, [p.read_text() for p in fragments(checker, target.series)],
                       checker.kernel_make_args, compiler)


def complete(entry: Path, key: str) -> bool:
    """The entry is complete with this key and holds what boots and builds against it."""
    if not entry_is_current(entry, key):
        return False
    manifest = read_manifest(entry) or {}
    release = str(manifest.get("release", ""))
    needed = [entry / "build" / "arch" / "x86" / "boot" / "bzImage",
              entry / "build" / "Module.symvers", entry / "build" / ".config",
              entry / "build" / "Makefile",
              entry / "modroot" / "lib" / "modules" / release / "modules.dep"]
    return bool(release) and all(p.is_file() for p in needed)


def host_tools(cc: str) -> list[hostpkg.Tool]:
    """What building a kernel needs on the host: also the plain `gcc` and the C library's
    headers, because Kbuild compiles its host programs (fixdep, Kconfig's conf) with HOSTCC=gcc
    (a fresh machine with only gcc-12 failed there)."""
    version = re.search(r"gcc-(\d+)$", cc)  # x86_64-linux-gnu-gcc-12 comes with gcc-12
    return [hostpkg.Tool("make", "make"),
            hostpkg.Tool(cc, f"gcc-{version.group(1)}" if version else "gcc"),
            hostpkg.Tool("gcc", "gcc"), hostpkg.Tool("/usr/include/arpa/inet.h", "libc6-dev"),
            hostpkg.Tool("flex", "flex"), hostpkg.Tool("bison", "bison"),
            hostpkg.Tool("bc", "bc"), hostpkg.Tool("perl", "perl"),
            hostpkg.Tool("/usr/include/gelf.h", "libelf-dev"),
            hostpkg.Tool("/usr/include/openssl/ssl.h", "libssl-dev"),
            hostpkg.Tool("depmod", "kmod"), hostpkg.Tool("xz", "xz-utils")]


def free_space_check(where: Path, need: float, what: str) -> None:
    """Say how much is needed, and refuse to start, when the disk cannot hold it."""
    free = shutil.disk_usage(where).free
    if free < need:
        raise BuildError(f"not enough disk space in {where} for {what}: it needs about "
                         f"{need / GB:.1f} GB, {free / GB:.1f} GB are free")


def ensure(cache: Cache, target: Target, checker: Sanitizer, cc: str,
           source: Callable[[], tuple[Path, str]], source_present: bool,
           progress: Progress = silent, jobs: int | None = None) -> DebugKernel:
    """The debug kernel of `target` with `checker`: from the cache, or built now.

    cc: the kernel's own compiler command (gcc-12, from its CONFIG_CC_VERSION_TEXT). source:
    gives the whole source tree and its cache key (extracting it when needed); source_present
    says whether it is extracted already (for the free-space check).
    """
    check_target(target, checker)
    hostpkg.ensure(host_tools(cc), "debug kernel build tools")
    compiler = _compiler_identity(cc)
    entry = entry_dir(cache, target, checker)
    with cache.lock(f"debug-kernel-{entry.name}",
                    wait_message=f"waiting for another run building {entry.name} ..."):
        manifest = read_manifest(entry) or {}
        source_key = str(manifest.get("source_key", ""))
        if source_key and complete(entry, entry_key(target, checker, compiler, source_key)):
            return _loaded(entry, checker, manifest)
        need = checker.build_bytes + MARGIN_BYTES + (0 if source_present else SOURCE_BYTES)
        free_space_check(entry.parent, need, f"the {checker.title} of {target.version} "
                         f"({'' if source_present else f'{SOURCE_BYTES / GB:.1f} GB source + '}"
                         f"{checker.build_bytes / GB:.1f} GB build)")
        tree, source_key = source()
        key = entry_key(target, checker, compiler, source_key)
        started = time.monotonic()
        facts: dict[str, object] = {
            "source_key": source_key, "source_tree": str(tree), "compiler": compiler, "cc": cc,
            "sanitizer": checker.name, "kernel_make_args": list(checker.kernel_make_args)}
        # the manifest is written last, with the facts as they are then
        with atomic_dir(entry, key, facts) as tmp:
            facts.update(_build(tmp, tree, target, checker, cc, progress, jobs),
                         seconds=round(time.monotonic() - started, 1))
        manifest = read_manifest(entry) or {}
        return _loaded(entry, checker, manifest, from_cache=False)


def _loaded(entry: Path, checker: Sanitizer, manifest: dict[str, object],
            from_cache: bool = True) -> DebugKernel:
    return DebugKernel(checker=checker, release=str(manifest["release"]), entry=entry,
                       compiler=str(manifest.get("compiler", "")), cc=str(manifest.get("cc", "")),
                       seconds=0.0 if from_cache else float(str(manifest.get("seconds", 0))),
                       objects=int(str(manifest.get("objects", 0))), from_cache=from_cache,
                       fragment=(entry / "fragment.config").read_text()
                       if (entry / "fragment.config").is_file() else "")


def _compiler_identity(cc: str) -> str:
    done = proc.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    return str(done.stdout).splitlines()[0] if done.stdout else cc


# -- the build ---------------------------------------------------------------------------------
def _build(tmp: Path, tree: Path, target: Target, checker: Sanitizer, cc: str,
           progress: Progress, jobs: int | None) -> dict[str, object]:
    """Configure, check, build and install into `tmp` (the entry to be); its facts."""
    out, log = tmp / "build", tmp / "build.log"
    out.mkdir()
    parts = fragments(checker, target.series)
    merged = "".join(f"# --- {p.name}\n{p.read_text()}" for p in parts)
    (tmp / "fragment.config").write_text(merged)
    base = ["make", "-C", str(tree), f"O={out}", f"CC={cc}"]
    what = f"{checker.title} of {target.version}"
    try:
        progress(f"{what}: config")
        _run([*base, "x86_64_defconfig"], log, tree)
        _run([*base, "kvm_guest.config"], log, tree)
        _run([str(tree / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O", str(out),
              str(out / ".config"), *map(str, parts)], log, tree)
        _run([*base, "olddefconfig"], log, tree)
        problems = config_problems((out / ".config").read_text(), wanted_options(parts),
                                   kconfig_symbols(tree))
        if problems:
            raise BuildError(f"the {what}'s config lost {len(problems)} option(s) the fragments "
                             f"ask for: {'; '.join(problems[:6])}", detail="\n".join(problems))
        jobs = jobs or os.cpu_count() or 1
        make = [*base, f"-j{jobs}", *checker.kernel_make_args]
        with Poller(lambda: progress(f"{what}: make", min(_objects(log), EXPECTED_OBJECTS),
                                     EXPECTED_OBJECTS), interval=1.0):
            _run([*make, "bzImage", "modules"], log, tree)
        progress(f"{what}: modules_install")
        release = (out / "include" / "config" / "kernel.release").read_text().strip()
        _run([*make, f"INSTALL_MOD_PATH={tmp / 'modroot'}", "modules_install"], log, tree)
        _run(["depmod", "-b", str(tmp / "modroot"), release], log, tree)
    except BuildError as exc:
        kept = _keep_log(log, tmp.parent / f"{target.package_version}_{checker.name}.failed.log")
        raise BuildError(f"{exc} (log: {kept})", detail=exc.detail) from None
    pvh = extract_pvh_vmlinux(out / "arch" / "x86" / "boot" / "bzImage")
    if pvh is not None:
        write_atomic(tmp / "vmlinux.pvh", pvh)
    return {"release": release, "objects": _objects(log)}


def _run(args: list[str], log: Path, cwd: Path, timeout: float = BUILD_TIMEOUT_S) -> None:
    """One step, its output appended to the log; a failure names its first error line."""
    # the source tree and our arguments decide the build, never the caller's environment
    dropped = ("ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT", "KCONFIG_CONFIG", "LOCALVERSION",
               "CC", "KCFLAGS")
    environ = {k: v for k, v in os.environ.items() if k not in dropped}
    environ["LC_ALL"] = "C"
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(args) + "\n")
        handle.flush()
        child = proc.run(args, stdout=handle, stderr=proc.STDOUT, env=environ, cwd=cwd,
                         timeout=timeout, what=" ".join(args[:2]), error=BuildError)
    if child.returncode != 0:
        text = log.read_text(errors="replace")
        if "No space left on device" in text:
            raise BuildError(f"{args[0]} failed: no space left on device in {log.parent.parent}")
        lines = text.splitlines()
        errors = [ln for ln in lines if "error" in ln.lower()][:1]
        raise BuildError(f"{' '.join(args[:4])} ... failed (exit {child.returncode}): "
                         f"{(errors or lines[-1:] or ['?'])[0].strip()[:300]}",
                         detail="\n".join(lines[-25:]))


_OBJECT = re.compile(r"^\s+(?:CC|AS)(?: \[M\])?\s+\S+\.o$", re.M)


def _objects(log: Path) -> int:
    try:
        return len(_OBJECT.findall(log.read_text(errors="replace")))
    except OSError:
        return 0


def _keep_log(log: Path, kept: Path) -> Path:
    """The temp entry goes on failure: the log is kept beside it."""
    if log.is_file():
        shutil.copy2(log, kept)
    return kept
