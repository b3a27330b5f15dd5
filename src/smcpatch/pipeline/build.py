"""Build stage: smc.ko out of tree against the exact kernel, before and after the fix.

Both variants are built in one work directory: first the *before* sources, then only the files that
differ are swapped in (with a fresh mtime) and make runs again, so the second build recompiles just
the patched file and relinks. Outputs are copied into a cache entry keyed by the inputs' hashes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data import KBUILD_RECIPE
from ..errors import BadInput, BuildError, ToolMissing
from ..kernels import chroot
from ..kernels.kconfig import KernelConfig, ensure_toolchain
from ..plumbing import proc
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_inputs, hash_tree
from ..plumbing.progress import Poller, Progress, silent
from .fetch import Workspace

# Bump when the build recipe changes, so cached modules are rebuilt.
BUILD_RECIPE = 2
SOURCE_SUFFIXES = (".c", ".h")
SOURCE_NAMES = ("Makefile", "Kconfig", "Kbuild")
OUTPUTS = ("smc.ko", "smc_clc.o", "smc_diag.ko")
LOG_TAIL_LINES = 25



@dataclass
class BuiltModule:
    variant: str
    ko: Path
    clc_object: Path  # smc_clc.o: small, carries DWARF for the patched function
    log: Path
    seconds: float
    compiled: list[str]  # the .o files make recompiled in this build

    def to_json(self) -> dict[str, object]:
        return {"ko": str(self.ko), "clc_object": str(self.clc_object), "log": str(self.log),
                "seconds": round(self.seconds, 2), "compiled": self.compiled}


@dataclass
class BuildResult:
    before: BuiltModule
    after: BuiltModule
    from_cache: bool
    compiler: str
    notes: list[str] = field(default_factory=list)
    compile_only: bool = False


def config_fragment() -> dict[str, str]:
    """data/kbuild/smc.config: the CONFIG_ options given to make for the out-of-tree build."""
    values: dict[str, str] = {}
    for line in (KBUILD_RECIPE / "smc.config").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# -- build -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildEnv:
    """Where make runs: the host (root None) or a chroot of the kernel's own suite, with the
    headers tree and the work dir bind-mounted at their own paths."""

    root: Path | None = None
    binds: tuple[Path, ...] = ()
    suite: str = ""  # the chroot's release

    def wrap(self, command: list[str], work: Path) -> list[str]:
        if self.root is None:
            return command
        return chroot.command_in_chroot(self.root, [*self.binds, work], command)


def environment(cache: Cache, ws: Workspace, progress: Progress = silent) -> BuildEnv:
    """The host, or a cached chroot of the kernel's own suite (its compiler, its glibc)."""
    suite = ws.target.build_env
    if not suite:
        return BuildEnv()
    if ws.kdir_root is None:
        raise BadInput(f"{ws.target.version}: a {suite} build environment needs the extracted "
                       "headers tree")
    progress(f"{suite} chroot")
    packages = chroot.cached_build_packages(cache, ws.target)
    root = chroot.ensure_chroot(cache, suite, packages)
    return BuildEnv(root=root, binds=(ws.kdir_root,), suite=suite)



# SMC off in the kernel's config (Debian 7.x): compile anyway, for the ELF checks only.
COMPILE_ONLY_ARGS = ("KCFLAGS=-DCONFIG_SMC_MODULE=1", "KBUILD_MODPOST_WARN=1")


def build_variants(cache: Cache, key: str, kdir: Path, before_src: Path, after_src: Path,
                   progress: Progress = silent, jobs: int | None = None,
                   env: BuildEnv = BuildEnv(), make_args: tuple[str, ...] = ()) -> BuildResult:
    """Build smc.ko from before_src and after_src (dirs holding the net/smc files). make_args:
    more variables for make (a debug kernel's CC= and which objects KCSAN instruments)."""
    config = KernelConfig.read(kdir / ".config")
    compile_only = config.get("CONFIG_SMC") not in ("m", "y")
    compiler = ensure_toolchain(config) if env.root is None else _chroot_compiler(env, config)
    notes = [_compiler_note(config, compiler, env)]
    if compile_only:
        notes.append("compile-and-inspect only: SMC is not enabled in this kernel's config "
                     "(CONFIG_SMC unset), so no module can load into it")
    root = cache.dir("builds", key)
    out = root / "out"
    inputs = hash_inputs(BUILD_RECIPE, str(kdir), _kdir_identity(kdir), compiler,
                         config_fragment(), hash_tree(before_src), hash_tree(after_src),
                         str(env.root), compile_only, *make_args)
    extra = (*(COMPILE_ONLY_ARGS if compile_only else ()), *make_args)
    if config.cross is not None:  # the headers' .kernelvariables take CC from CROSS_COMPILE
        extra = (*extra, *config.cross.make_args())
    with cache.lock(f"build-{key}", wait_message=f"waiting for another run building {key} ..."):
        if entry_is_current(out, inputs, "stat"):  # a deleted or rewritten output: rebuild
            return dataclasses.replace(_load_result(out, compiler, notes),
                                       compile_only=compile_only)
        work = root / "work"
        with atomic_dir(out, inputs, {"compiler": compiler}, "stat") as tmp:
            before = _build_one("before", work, kdir, before_src, tmp, progress, jobs, env, extra)
            after = _build_one("after", work, kdir, after_src, tmp, progress, jobs, env, extra)
        return BuildResult(before=_relocated(before, tmp, out), after=_relocated(after, tmp, out),
                           from_cache=False, compiler=compiler, notes=notes,
                           compile_only=compile_only)


def _chroot_compiler(env: BuildEnv, config: KernelConfig) -> str:
    """The identity of the chroot's compiler (the kernel's own, installed by mmdebstrap)."""
    assert env.root is not None
    done = proc.run(["chroot", str(env.root), config.build_compiler, "--version"],
                    capture_output=True, text=True, timeout=60, error=BuildError)
    if done.returncode != 0:
        raise ToolMissing(f"{config.build_compiler} is missing from the chroot {env.root}: "
                          "remove that directory to have it made again")
    return str(done.stdout).splitlines()[0]


def _kdir_identity(kdir: Path) -> str:
    stat = (kdir / "Module.symvers").stat()
    return f"{stat.st_size}:{int(stat.st_mtime)}"


def _compiler_note(config: KernelConfig, compiler: str, env: BuildEnv) -> str:
    """One note on where and with what the module is built, against the kernel's own compiler
    (CONFIG_CC_VERSION_TEXT): the same, another gcc version, or (Debian's cross compilers lag
    the native one) another Debian revision of the same version."""
    how = f"cross-built for {config.arch}" if config.cross is not None else "built"
    done = f"{how} with {compiler} in {f'a {env.suite} chroot' if env.suite else 'the host'}"
    want = config.compiler_version
    kernel_text = config.get("CONFIG_CC_VERSION_TEXT")
    if want and want not in compiler:
        return f"{done}; the kernel was built with {kernel_text}: code may differ from Debian's"
    revision = re.search(r"\(Debian ([^)]+)\)", kernel_text or "")
    if revision and f"(Debian {revision.group(1)})" not in compiler:
        return (f"{done}; the kernel was built with {kernel_text} (the same gcc, another Debian "
                "revision): code may differ where they differ")
    return f"{done}, the kernel's own compiler (CONFIG_CC_VERSION_TEXT)"


def _build_one(variant: str, work: Path, kdir: Path, src: Path, out_tmp: Path,
               progress: Progress, jobs: int | None, env: BuildEnv,
               extra: tuple[str, ...]) -> BuiltModule:
    marker = work / ".building"
    if marker.exists():  # an interrupted build may have left truncated objects: start clean
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    changed = sync_sources(src, work)
    to_compile = sum(1 for name in changed if name.endswith(".c")) or 1
    progress(f"build {variant}", 0, to_compile)
    dest = out_tmp / variant
    dest.mkdir()
    log = dest / "build.log"
    marker.touch()
    started = time.monotonic()
    with Poller(lambda: progress(f"build {variant}", len(_compiled_objects(log)), to_compile)):
        _make(kdir, work, log, jobs, env, extra)
    seconds = time.monotonic() - started
    marker.unlink()
    for name in OUTPUTS:
        if (work / name).exists():
            shutil.copy2(work / name, dest / name)
    if not (dest / "smc.ko").exists():
        raise BuildError(f"make succeeded but produced no smc.ko (see {log})")
    return BuiltModule(variant=variant, ko=dest / "smc.ko", clc_object=dest / "smc_clc.o",
                       log=log, seconds=seconds, compiled=_compiled_objects(log))


def sync_sources(src: Path, work: Path) -> list[str]:
    """Make work's source files equal to src's; touch only what changed (so make reuses objects)."""
    wanted = {p.name: p for p in src.iterdir() if _is_source(p)}
    changed: list[str] = []
    for name, path in wanted.items():
        dest = work / name
        data = path.read_bytes()
        if not dest.exists() or dest.read_bytes() != data:
            dest.write_bytes(data)  # a fresh mtime: newer than the old object
            changed.append(name)
    for stale in work.iterdir():
        if _is_source(stale) and stale.name not in wanted:
            stale.unlink()
            changed.append(stale.name)
    return changed


def _is_source(path: Path) -> bool:
    if path.name.endswith(".mod.c"):  # generated by modpost, not ours to sync
        return False
    return path.is_file() and (path.suffix in SOURCE_SUFFIXES or path.name in SOURCE_NAMES)


def _make(kdir: Path, work: Path, log: Path, jobs: int | None, env: BuildEnv,
          extra: tuple[str, ...]) -> None:
    options = [f"{k}={v}" for k, v in config_fragment().items()]
    args = env.wrap(["make", "-C", str(kdir), f"M={work}", f"-j{jobs or os.cpu_count() or 1}",
                     *options, *extra, "modules"], work)
    # the headers tree and our make arguments decide these, never the caller's environment
    dropped = ("ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT")
    environ = {k: v for k, v in os.environ.items() if k not in dropped}
    environ["LC_ALL"] = "C"
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(args) + "\n")
        handle.flush()
        code = proc.run(args, stdout=handle, stderr=proc.STDOUT, env=environ, timeout=3600,
                        what="make", error=BuildError).returncode
    if code != 0 and "No space left on device" in log.read_text(errors="replace"):
        shutil.rmtree(work, ignore_errors=True)  # free what the build wrote; rebuilt next time
        raise BuildError(f"make failed: no space left on device in {work.parent} "
                         "(the partial build was removed)")
    if code != 0:
        kept = _keep_log(log, work)
        lines = kept.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if "error" in ln.lower()][:1]
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        raise BuildError(f"make failed (exit {code}): {(errors or ['see the log'])[0].strip()}; "
                         f"full log: {kept}", detail=tail)


def _keep_log(log: Path, work: Path) -> Path:
    """The output entry is discarded on failure: keep the log beside the work dir."""
    kept = work.parent / "failed-build.log"
    shutil.copy2(log, kept)
    return kept


def _compiled_objects(log: Path) -> list[str]:
    found = re.findall(r"^\s*CC \[M\]\s+(\S+)", log.read_text(errors="replace"), re.M)
    return sorted({Path(p).name for p in found})


def _relocated(module: BuiltModule, tmp: Path, final: Path) -> BuiltModule:
    def move(path: Path) -> Path:
        return final / path.relative_to(tmp)

    return BuiltModule(variant=module.variant, ko=move(module.ko),
                       clc_object=move(module.clc_object), log=move(module.log),
                       seconds=module.seconds, compiled=module.compiled)


def _load_result(out: Path, compiler: str, notes: list[str]) -> BuildResult:
    def load(variant: str) -> BuiltModule:
        dest = out / variant
        return BuiltModule(variant=variant, ko=dest / "smc.ko", clc_object=dest / "smc_clc.o",
                           log=dest / "build.log", seconds=0.0,
                           compiled=_compiled_objects(dest / "build.log"))

    return BuildResult(before=load("before"), after=load("after"), from_cache=True,
                       compiler=compiler, notes=notes)
