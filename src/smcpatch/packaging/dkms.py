"""DKMS: a DKMS source package of the fixed SMC module for one Debian kernel, and a test build.

``write_package`` writes a directory that ``dkms add <dir>`` accepts::

    dkms.conf             PACKAGE_NAME/VERSION, both modules, MAKE, PATCH[n] + PATCH_MATCH[n]
    net/smc/*             the kernel's own net/smc sources as Debian ships them (unpatched)
    patches/*.patch       our fixes the shipped source lacks; dkms applies them at build time
    README.smcpatch       which fix is applied, which is already in the source
    .smcpatch-dkms.json   what was written, every file listed (marks the directory as ours:
                          rewriting it is allowed, and only the files it lists are replaced or
                          removed; a user's built objects or notes beside them stay)

The package carries one kernel's sources, so ``BUILD_EXCLUSIVE_KERNEL`` and every
``PATCH_MATCH`` name that kernel ABI (all its flavours, e.g. ``^6\\.1\\.0-50-``). Fixes the shipped
source already has get no ``PATCH`` line. Every patch is applied in order to a scratch copy before
the package is written, so a package that dkms would fail to patch is never written.

``build_package`` runs Debian's real dkms (``dkms add`` + ``dkms build``) with private
``--dkmstree/--sourcetree/--installtree`` dirs and ``--kernelsourcedir`` = the extracted headers, so
nothing is created under /lib/modules, /usr/src or /var/lib/dkms; it never installs or loads.

dkms 3.0 pitfall: ``AUTOINSTALL`` enables autoinstall when set to *any* value, ``"no"``
included, so the package leaves it unset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .. import __version__
from ..errors import BadInput, BuildError, PatchError
from ..kernels.kconfig import KernelConfig, ensure_toolchain
from ..pipeline import build
from ..pipeline.classify import FixState, patch_tool, run_patch
from ..pipeline.fetch import Workspace
from ..plumbing import hostpkg
from ..plumbing import proc as children
from ..plumbing.cache import sweep_stale_temps
from ..plumbing.files import check_own_dir, temp_name, write_atomic
from . import signing

PACKAGE_NAME = "smc-cve-2025-40168"
MARKER = ".smcpatch-dkms.json"
README = "README.smcpatch"
FORMAT = 1
MODULES = ("smc", "smc_diag")
DEST_MODULE_LOCATION = "/updates/dkms"  # what Debian's dkms uses whatever dkms.conf says
DKMS_TIMEOUT = 3600
LOG_TAIL_LINES = 25
# Characters dkms and its directory names ("<name>-<version>") handle without quoting trouble.
_VERSION_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]")
# ERE metacharacters (bash [[ =~ ]] is POSIX ERE: escape only these, never '-').
_ERE_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


@dataclass
class DkmsBuild:
    """The result of ``dkms build`` of one package for one kernel release."""

    release: str
    modules: dict[str, Path]  # module name → the built (uncompressed, stripped) .ko
    make_log: Path
    output: str  # dkms's own stdout+stderr
    patches_applied: list[str]
    dkms_version: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def smc(self) -> Path:
        return self.modules["smc"]


# -- naming ------------------------------------------------------------------------------------
def package_version(ws: Workspace) -> str:
    """PACKAGE_VERSION: the Debian package version, made safe for dkms (``~`` → ``.``)."""
    return _VERSION_UNSAFE.sub(".", ws.target.package_version)


def release_regex(ws: Workspace) -> str:
    """An ERE matching every flavour's release of this kernel ABI, e.g. ``^6\\.1\\.0-50-``."""
    return "^" + _ERE_SPECIAL.sub(r"\\\1", ws.target.abi) + "-"


BUILD_DIR = "${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build/net/smc"


def make_command() -> str:
    """The MAKE command of dkms.conf (dkms expands the ${...} variables when it reads it)."""
    options = " ".join(f"{k}={v}" for k, v in build.config_fragment().items())
    return f"make -C ${{kernel_source_dir}} M={BUILD_DIR} {options} modules"


# -- writing the package -----------------------------------------------------------------------
def write_package(ws: Workspace, states: list[FixState], out_dir: Path,
                  fixed_sources: Path | None = None) -> Path:
    """Write the DKMS source package for ``ws``'s kernel into ``out_dir`` (atomically).

    ``states`` are the classified fixes (patching.classify on ws.source_tree): a vulnerable fix
    becomes PATCH[n]/PATCH_MATCH[n], a fixed one is only named in the README. An unknown state is
    refused (PatchError). ``out_dir`` must be absent, empty, or a package written by us earlier.

    With ``fixed_sources`` (the verified after variant's net/smc) the package carries the fixed
    sources themselves (module_src/<release>): no PATCH lines, the patches under patches/ for
    reference, and a top-level Makefile so that `make -C /lib/modules/<release>/build M=$PWD`
    builds it as well as DKMS does.
    """
    smc = ws.source_tree / "net" / "smc"
    if not (smc / "smc_clc.c").is_file() or not (smc / "Makefile").is_file():
        raise BadInput(f"{ws.source_tree} holds no net/smc sources (net/smc/smc_clc.c, Makefile)")
    if not states:
        raise BadInput("no fixes selected: nothing to package")
    unknown = [s for s in states if s.state not in ("vulnerable", "fixed")]
    if unknown:
        raise PatchError("; ".join(f"{s.fix_id} neither applies nor reverts on "
                                   f"{ws.target.release}'s sources ({s.detail})" for s in unknown)
                         + ": no DKMS package written")
    _check_smc_enabled(ws)
    out_dir = out_dir.expanduser().absolute()
    check_out_dir(out_dir)
    previous = our_files(out_dir)
    to_apply = [s for s in states if s.state == "vulnerable"]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(out_dir.parent, out_dir.name)  # what a killed run of ours left
    stage = out_dir.parent / temp_name(out_dir.name)
    stage.mkdir()
    try:
        (stage / "net" / "smc").mkdir(parents=True)
        for path in sorted((fixed_sources or smc).iterdir()):
            if path.is_file() and not path.is_symlink():
                shutil.copy2(path, stage / "net" / "smc" / path.name)
        copied = _copy_patches(to_apply, stage / "patches")
        patch_names = [] if fixed_sources else copied
        _check_patches_apply(stage, patch_names)
        (stage / "dkms.conf").write_text(dkms_conf(ws, states, patch_names, bool(fixed_sources)))
        (stage / README).write_text(_readme(ws, states, patch_names, bool(fixed_sources)))
        if fixed_sources:
            (stage / "Makefile").write_text(TOP_MAKEFILE)
        written = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*")
                         if p.is_file())
        marker = {"format": FORMAT, "tool": f"smcpatch {__version__}", "package": PACKAGE_NAME,
                  "version": package_version(ws), "kernel": ws.target.package_version,
                  "abi": ws.target.abi, "release_regex": release_regex(ws),
                  "fixes": {s.fix_id: s.state for s in states}, "patches": patch_names,
                  "files": written, "created": time.time()}
        if out_dir.is_dir() and any(out_dir.iterdir()):
            _update_in_place(stage, out_dir, previous, written, marker)
        else:  # new (or empty): the whole package appears at once
            (stage / MARKER).write_text(_marker_text(marker))
            if out_dir.is_dir():
                out_dir.rmdir()
            stage.rename(out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir


def _marker_text(marker: dict[str, object]) -> str:
    return json.dumps(marker, indent=1, sort_keys=True, allow_nan=False) + "\n"


def our_files(out_dir: Path) -> set[str] | None:
    """What an earlier package of ours wrote in out_dir (its marker's list; None: a package
    whose marker predates the list, or none). Only those are ever replaced or removed: built
    objects, a notes file or anything else a user put there stays."""
    try:
        data = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    listed = data.get("files") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return None
    if not all(isinstance(rel, str) and _inside(rel) for rel in listed):
        raise BadInput(f"{out_dir / MARKER}: it lists a file outside {out_dir}: not a marker "
                       "smcpatch wrote; nothing changed")
    return set(listed)


def _inside(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not PurePosixPath(rel).is_absolute() and ".." not in parts \
        and "." not in parts and rel != MARKER


def _real_dirs(out_dir: Path, rel: str) -> bool:
    """Every directory between out_dir and rel is a directory of out_dir's (no symlink out)."""
    here = out_dir
    for part in PurePosixPath(rel).parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            return False
    return True


def _update_in_place(stage: Path, out_dir: Path, previous: set[str] | None,
                     written: list[str], marker: dict[str, object]) -> None:
    """Rewrite our package in a directory that holds more than ours: our files replaced, those
    we no longer write removed, nothing else touched. The marker claims old and new files while
    this runs, so an interrupted update is finished by the next run."""
    if previous is None:  # a marker without its list: what we write now, and our patches
        previous = {rel for rel in written if (out_dir / rel).exists()} | \
            {f"patches/{p.name}" for p in (out_dir / "patches").glob("*.patch")}
    theirs = [rel for rel in written if rel not in previous and os.path.lexists(out_dir / rel)]
    crooked = [rel for rel in sorted(set(written) | previous) if not _real_dirs(out_dir, rel)]
    if theirs or crooked:
        raise BadInput(f"--out {out_dir}: "
                       + (f"{', '.join(theirs[:5])} not written by smcpatch, and the package "
                          "has a file of that name" if theirs else
                          f"{', '.join(crooked[:5])} lies under a symlink or a file")
                       + ": move it away and rerun; nothing was changed")
    write_atomic(out_dir / MARKER, _marker_text({**marker,
                                                 "files": sorted(previous | set(written))}))
    for rel in written:
        dest, new = out_dir / rel, stage / rel
        if dest.is_file() and not dest.is_symlink() and dest.read_bytes() == new.read_bytes():
            continue  # unchanged: its mtime kept, make rebuilds nothing for it
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, dest)
        os.utime(dest)  # newer than any object a user built from the file it replaces
    for rel in sorted(previous - set(written)):
        dest = out_dir / rel
        if os.path.lexists(dest) and not dest.is_dir():
            dest.unlink()
            _remove_empty_parents(dest.parent, out_dir)
    write_atomic(out_dir / MARKER, _marker_text(marker))


def _remove_empty_parents(directory: Path, top: Path) -> None:
    while directory != top and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def _check_smc_enabled(ws: Workspace) -> None:
    """A kernel whose config has SMC off (Debian's 7.x) can neither build nor load the package."""
    if not ws.kernel_config.is_file():
        return  # a synthetic or partial kdir: nothing to say
    if KernelConfig.read(ws.kernel_config).get("CONFIG_SMC") not in ("m", "y"):
        raise BadInput(f"SMC is not enabled in {ws.target.release}'s config (CONFIG_SMC unset): "
                       "dkms would skip the package there (BUILD_EXCLUSIVE_CONFIG) and that "
                       "kernel cannot load an SMC module; no DKMS package written")


def is_our_package(path: Path) -> bool:
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("package") == PACKAGE_NAME


def check_out_dir(out_dir: Path) -> None:
    """--out: new, empty, or a package written by smcpatch (its marker); refused otherwise."""
    if out_dir.is_dir() and not out_dir.is_symlink() and any(out_dir.iterdir()) \
            and not is_our_package(out_dir):
        raise BadInput(f"--out {out_dir} exists and is not empty (and is not a DKMS package "
                       "written by smcpatch): choose a new or empty directory")
    check_own_dir(out_dir, "--out", MARKER)


def _copy_patches(states: list[FixState], dest: Path) -> list[str]:
    names: list[str] = []
    for st in states:
        src = st.variant.path
        if not src.is_file():
            raise PatchError(f"{st.fix_id}: patch file {src} is missing")
        dest.mkdir(exist_ok=True)
        shutil.copy2(src, dest / src.name)
        names.append(src.name)
    return names


def _check_patches_apply(package: Path, patch_names: list[str]) -> None:
    """Apply the patches in dkms's order to a scratch copy: strictly (no fuzz), never -t/-f."""
    if not patch_names:
        return
    patch_tool()
    applied: list[str] = []
    scratch = package / ".patch-check"
    shutil.copytree(package / "net", scratch / "net")
    try:
        for name in patch_names:
            done = run_patch(scratch, package / "patches" / name, reverse=False, dry_run=False)
            if not done.ok:
                detail = " ".join(done.output.split())[:300]
                after = f" after {', '.join(applied)}" if applied else ""
                raise PatchError(f"{name} does not apply{after} on the packaged sources: {detail}")
            applied.append(name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


TOP_MAKEFILE = """\
# The fixed SMC module, out of tree: make -C /lib/modules/<release>/build M=$PWD
# (the kernel's own CONFIG_SMC decides what is built, as in its tree). Written by smcpatch.
obj-m += net/smc/
"""


def dkms_conf(ws: Workspace, states: list[FixState], patch_names: list[str],
              fixed: bool = False) -> str:
    """The text of dkms.conf (bash, sourced by dkms)."""
    t = ws.target
    regex = release_regex(ws)
    how = ("# The sources carry the fix already (verified by smcpatch); patches/ shows it."
           if fixed else
           "# The sources are Debian's, unpatched; dkms applies the PATCH lines at build time.")
    lines = [
        f"# DKMS package of the SMC module (net/smc) of Debian linux {t.package_version}",
        f"# (kernel ABI {t.abi}, every flavour), written by smcpatch {__version__}.",
        how,
        f'PACKAGE_NAME="{PACKAGE_NAME}"',
        f'PACKAGE_VERSION="{package_version(ws)}"',
    ]
    for i, name in enumerate(MODULES):
        lines += [f'BUILT_MODULE_NAME[{i}]="{name}"',
                  f'BUILT_MODULE_LOCATION[{i}]="net/smc/"',
                  f'DEST_MODULE_LOCATION[{i}]="{DEST_MODULE_LOCATION}"']
    lines += [
        f'MAKE[0]="{make_command()}"',
        f'CLEAN="make -C ${{kernel_source_dir}} M={BUILD_DIR} clean"',
        "# These are this kernel's own sources: build them for this kernel ABI only.",
        f'BUILD_EXCLUSIVE_KERNEL="{regex}"',
        'BUILD_EXCLUSIVE_CONFIG="CONFIG_SMC"',
    ]
    by_name = {s.variant.path.name: s for s in states}
    for i, name in enumerate(patch_names):
        st = by_name[name]
        lines += [f"# {st.fix_id} ({st.variant.name} variant): "
                  f"{', '.join(st.variant.functions)}",
                  f'PATCH[{i}]="{name}"',
                  f'PATCH_MATCH[{i}]="{regex}"']
    for st in states:
        if st.state == "fixed":
            lines.append(f"# {st.fix_id}: already in these sources, no patch needed")
    lines += ["# AUTOINSTALL is deliberately unset: dkms 3.0 autoinstalls when it has any value,",
              '# "no" included. Build and install by hand (see README.smcpatch).', ""]
    return "\n".join(lines)


_PLAIN_MAKE = """
Build it without DKMS (the kernel's linux-headers package installed):

    make -C /lib/modules/{release}/build M=$PWD
"""
_NOTHING_TO_PATCH = ("\nThis kernel's source already has every selected fix: the package has no "
                     "PATCH line and\nrebuilds the module as Debian ships it.\n")


def _readme(ws: Workspace, states: list[FixState], patch_names: list[str],
            fixed: bool = False) -> str:
    t = ws.target
    version = package_version(ws)
    rows = []
    applied = ("applied in these sources (verified by smcpatch): patches/" if fixed else
               "patched by dkms at build time: patches/")
    for st in states:
        what = (applied + st.variant.path.name
                if st.state == "vulnerable" else "already fixed in Debian's source: no patch")
        rows.append(f"- {st.fix_id} ({', '.join(st.variant.functions)}): {what}")
    return f"""\
{PACKAGE_NAME} {version}: the SMC module of Debian linux {t.package_version}, with the fix
for CVE-2025-40168 (smc_clc_prfx_match() use-after-free). Written by smcpatch {__version__}.

Sources: net/smc of linux-source-{t.series} {t.package_version}, {"with the fix applied"
if fixed else "exactly as Debian ships them"}.
Built only for kernel releases matching {release_regex(ws)} (e.g. {t.release}).

Fixes:
{chr(10).join(rows)}
{"" if patch_names or fixed else _NOTHING_TO_PATCH}{_PLAIN_MAKE.format(release=t.release)
if fixed else ""}
Use (as root; DKMS needs the kernel's linux-headers package installed):

    dkms add /path/to/this/directory
    dkms build -m {PACKAGE_NAME} -v {version} -k {t.release}
    dkms install -m {PACKAGE_NAME} -v {version} -k {t.release}

AUTOINSTALL is not set, so new kernels do not rebuild it. With Secure Boot, dkms signs the
module with its MOK key (/var/lib/dkms/mok.key) if the kernel's sign-file is installed.
"""


# -- building it with Debian's dkms --------------------------------------------------------------
TOOLS = (hostpkg.Tool("dkms", "dkms"),)


def ensure_dkms(install: bool = True) -> str:
    """dkms's version (``dkms-3.0.10``); installed with apt when missing and root (hostpkg)."""
    hostpkg.ensure(TOOLS, "dkms", install=install)
    done = children.run(["dkms", "--version"], capture_output=True, text=True, timeout=60)
    return str(done.stdout.strip() or done.stderr.strip()).splitlines()[0]


def build_package(ws: Workspace, package: Path, work: Path, jobs: int | None = None,
                  sign_key: Path | None = None, sign_cert: Path | None = None) -> DkmsBuild:
    """``dkms add`` + ``dkms build`` of ``package`` for ``ws``'s kernel, in ``work`` only.

    ``work`` (created; must be empty or absent) receives dkms's trees. ``--kernelsourcedir`` is
    ws.kdir, so /lib/modules/<release> need not exist. Signing: with sign_key/sign_cert dkms
    signs with the kernel's own sign-file; without, signing is switched off (dkms would otherwise
    make a MOK key under /var/lib/dkms when it finds a sign-file).
    """
    if not (package / "dkms.conf").is_file():
        raise BadInput(f"{package} holds no dkms.conf")
    if os.geteuid() != 0:
        raise BadInput("`dkms add` refuses to run as non-root (dkms's check_root): run as root")
    if (sign_key is None) != (sign_cert is None):
        raise BadInput("signing needs both a key and a certificate (--sign-key and --sign-cert)")
    if sign_key is not None and sign_cert is not None:
        signing.check_key_matches_cert(sign_key, sign_cert)
        signing.sign_file_path(ws)
    if ws.target.build_env:
        raise BadInput(f"dkms build runs with this host's compiler, but {ws.target.version} is "
                       f"built with {ws.target.compiler} of {ws.target.build_env} (smcpatch builds "
                       f"it in a {ws.target.build_env} chroot): build the package on a "
                       f"{ws.target.build_env} system instead")
    version = ensure_dkms()
    ensure_toolchain(KernelConfig.read(ws.kdir / ".config"))
    work = work.absolute()
    if work.exists() and any(work.iterdir()):
        raise BadInput(f"dkms work directory {work} is not empty")
    trees = {name: work / name for name in ("dkms", "src", "install", "tmp")}
    for path in trees.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("ARCH", "CROSS_COMPILE",
                                                             "KBUILD_OUTPUT")}
    env.update(TMPDIR=str(trees["tmp"]), LC_ALL="C")
    if sign_key and sign_cert:
        env.update(sign_file=str(ws.kdir / "scripts" / "sign-file"),
                   mok_signing_key=str(sign_key.absolute()),
                   mok_certificate=str(sign_cert.absolute()))
    else:  # dkms reads these from the environment too: a path that doesn't exist = no signing
        env.update(sign_file=str(trees["tmp"] / "signing-disabled-by-smcpatch"))
    common = ["--dkmstree", str(trees["dkms"]), "--sourcetree", str(trees["src"]),
              "--installtree", str(trees["install"])]
    conf = _read_conf_values(package / "dkms.conf")
    name, pkg_version = conf.get("PACKAGE_NAME", ""), conf.get("PACKAGE_VERSION", "")
    release = ws.target.release
    started = time.monotonic()
    add = _run_dkms(["add", str(package.absolute()), "-k", release, *common], env)
    out = _run_dkms(["build", "-m", name, "-v", pkg_version, "-k", release,
                     "--kernelsourcedir", str(ws.kdir), "-j", str(jobs or os.cpu_count() or 1),
                     *common], env, make_log=trees["dkms"] / name / pkg_version / "build"
                    / "make.log")
    seconds = time.monotonic() - started
    base = trees["dkms"] / name / pkg_version / release
    arches = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not arches:
        raise BuildError(f"dkms build reported success but {base} holds no build:\n{out}")
    modules = {p.name.split(".")[0]: p for p in sorted((arches[0] / "module").iterdir())}
    if "smc" not in modules:
        raise BuildError(f"dkms build produced no smc.ko in {arches[0] / 'module'}:\n{out}")
    applied = re.findall(r"applying patch (\S+?)\.\.\.", out)
    return DkmsBuild(release=release, modules=modules, make_log=arches[0] / "log" / "make.log",
                     output=add + out, patches_applied=applied, dkms_version=version,
                     seconds=seconds)


def _read_conf_values(conf: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in conf.read_text().splitlines():
        m = re.match(r'^([A-Z_]+)="([^"$]*)"$', line.strip())
        if m:
            values[m.group(1)] = m.group(2)
    if not values.get("PACKAGE_NAME") or not values.get("PACKAGE_VERSION"):
        raise BadInput(f"{conf}: no literal PACKAGE_NAME/PACKAGE_VERSION")
    return values


def _run_dkms(args: list[str], env: dict[str, str], make_log: Path | None = None) -> str:
    proc = children.run(["dkms", *args], env=env, capture_output=True, text=True,
                        timeout=DKMS_TIMEOUT)
    output = str(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-LOG_TAIL_LINES:]
        if make_log is not None and make_log.is_file():
            tail += ["--- make.log:", *make_log.read_text(errors="replace")
                     .splitlines()[-LOG_TAIL_LINES:]]
        if proc.returncode == 77:
            raise BadInput(f"dkms {args[0]}: the package is not for this kernel "
                           f"(BUILD_EXCLUSIVE): {' '.join(tail)}")
        raise BuildError(f"`dkms {' '.join(args[:1])}` failed (exit {proc.returncode}):\n"
                  + "\n".join(tail))
    return output
