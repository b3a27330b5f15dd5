"""`host`: is this machine affected by CVE-2025-40168, and what to do now.

Per installed kernel: its smc.ko judged by the inspector (inspection.judge), the package that
owns it, whether smc is loaded now (the running kernel) and whether it can load (kmod's
configuration, the kernel command line, modules_disabled), and for a vulnerable one what Debian
says: the version that fixed it and whether the machine's suites offer it. `--mitigate` writes
smcpatch's modprobe.d file first (`--unmitigate` removes it); the report is the state after.

Exposed: a kernel whose smc.ko is vulnerable (or cannot be judged) and is loaded, or can be
loaded by modprobe (see installed.modprobe: a blacklist alone does not stop `modprobe smc` nor
smc_diag pulling smc in). Every installed kernel counts, not only the running one: the boot
loader may start any of them (Debian keeps the previous kernel as a fallback).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadInput, SmcpatchError
from ..inspection import judge
from ..inspection.elf import MAX_INPUT_SIZE
from ..installed import mitigation
from ..installed.advice import Advice, Advisor, ArchiveAdvisor
from ..installed.kernels import InstalledKernel, add_packages, installed_kernels
from ..installed.mitigation import Action, Change
from ..installed.modprobe import (
    Block,
    Decision,
    KernelIndex,
    ModprobeConfig,
    decide,
    read_config,
)
from ..installed.root import Root
from ..installed.runtime import Runtime
from ..kernels import versions
from ..kernels.targets import arch_of
from ..outputs import jsonreport, vex
from ..outputs.jsonreport import write_json
from ..outputs.products import (
    REBUILD,
    File,
    Justification,
    ProductStatement,
    Status,
    status_of,
)
from ..outputs.text import command
from ..outputs.vex import VexOutput
from ..plumbing import files
from . import EXIT_FAIL, EXIT_OK

SCHEMA = "smcpatch-host/1"
BAD = ("vulnerable", "unknown")  # a module that is vulnerable or cannot be judged


@dataclass
class HostRequest:
    root: Path = Path("/")
    json_path: Path | None = None
    vex: VexOutput | None = None  # --vex, --vex-format: one document per format
    action: Action | None = None
    cache_dir: Path | None = None


@dataclass
class KernelState:
    """One installed kernel on this machine."""

    kernel: InstalledKernel
    running: bool
    smc: str  # module | none (not built) | builtin | no_modules (no modules directory)
    verdict: str  # vulnerable | fixed | not_affected | unknown
    reasons: list[str] = field(default_factory=list)
    module_sha256: str = ""
    loaded: bool | None = None  # None: not the running kernel, or /proc/modules unreadable
    blocks: list[Block] = field(default_factory=list)  # what stops smc, every load first
    loadable: bool = False  # modprobe (or insmod) can load it
    autoloads: bool = False  # socket(AF_SMC) loads it through net-pf-43
    advice: Advice | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exposed(self) -> bool:
        """A bad module that is, or can be, in the kernel."""
        if self.verdict not in BAD or self.smc in ("none", "no_modules") and not self.loaded:
            return False
        return self.loadable or self.loaded is True or (self.running and self.loaded is None)

    def to_json(self) -> dict[str, Any]:
        k = self.kernel
        return {
            "release": k.release, "running": self.running, "modules_dir": k.directory,
            "package": k.package, "version": k.version, "arch": k.arch,
            "smc": self.smc, "module": k.module, "debian_module": k.debian_module,
            "module_sha256": self.module_sha256 or None, "verdict": self.verdict,
            "reasons": self.reasons, "loaded": self.loaded, "loadable": self.loadable,
            "autoloads": self.autoloads,
            "blocked_by": [{"text": b.text, "source": b.source} for b in self.blocks],
            "exposed": self.exposed,
            "advice": self.advice.to_json() if self.advice else None, "notes": self.notes,
        }


@dataclass
class HostResult:
    root: str
    runtime: Runtime
    kernels: list[KernelState]
    config: ModprobeConfig
    decision: Decision
    change: Change | None
    notes: list[str]
    generated: str
    summary: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if any(k.exposed for k in self.kernels) else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "schema": SCHEMA, "tool_version": __version__, "generated": self.generated,
            "root": self.root, "running_release": self.runtime.release,
            "exposed": self.exit_code != EXIT_OK, "summary": self.summary,
            "exit_code": self.exit_code,
            "mitigation": ({"action": self.change.action, "outcome": self.change.outcome,
                            "path": self.change.path} if self.change else None),
            "modprobe": {
                "files": list(self.config.files), "hidden": list(self.config.hidden),
                "every_load_blocked_by": _block_json(d.every_load),
                "autoload_blocked_by": _block_json(d.autoload), "notes": list(d.notes)},
            "running_kernel": {
                "loaded_modules_known": self.runtime.loaded is not None,
                "cmdline_known": self.runtime.cmdline is not None,
                "modules_disabled": self.runtime.modules_disabled},
            "kernels": [k.to_json() for k in self.kernels],
            "notes": self.notes,
        }


def _block_json(block: Block | None) -> dict[str, str] | None:
    return None if block is None else {"text": block.text, "source": block.source}


# -- the request, checked before any work --------------------------------------------------------
def check_request(request: HostRequest) -> Root:
    """ROOT is a directory; the mitigation file can be written or removed (it is ours)."""
    root = Root.at(files.check_input_dir(request.root, "a machine's files (--root)"))
    if request.action is not None:
        mitigation.check(root, request.action)
    return root


# -- the run -------------------------------------------------------------------------------------
def run(request: HostRequest, runtime: Runtime | None = None,
        advisor: Advisor | None = None) -> HostResult:
    """The machine at ROOT judged (after the mitigation change asked for). `runtime` and
    `advisor` stand in for /proc and the archive in tests. A root that holds no kernel, or a
    --vex with no statement to make, is refused before anything is changed or written."""
    root = check_request(request)
    runtime = runtime or (Runtime.of_host() if root.is_host else Runtime.absent())
    kernels = installed_kernels(root)
    if runtime.release and all(k.release != runtime.release for k in kernels):
        kernels.append(InstalledKernel(runtime.release, f"/lib/modules/{runtime.release}"))
    if not kernels:
        raise BadInput(f"{root.path} holds no installed kernel (no lib/modules/<release> "
                       "directory): undecided (is the image mounted?)")
    add_packages(root, kernels)
    _check_vex(request, root, kernels)
    states = [_inspect(root, k, runtime) for k in kernels]  # a refusal comes before a change
    change = mitigation.apply(root, request.action) if request.action else None
    advisor = advisor or ArchiveAdvisor(root, request.cache_dir)
    config = read_config(root)
    decision = decide(config)
    for state in states:
        _loading(state, runtime, *_decisions(root, state.kernel, config, runtime))
    for state in states:
        if state.verdict in BAD and state.smc in ("module", "builtin"):
            state.advice = advisor.advise(state.kernel.release)
    notes = _notes(runtime, root, decision, change, states) + advisor.notes
    result = HostResult(str(root.path), runtime, states, config, decision, change, notes,
                        jsonreport.now())
    result.summary = summary(result)
    _write(request, result)
    return result


def _decisions(root: Root, kernel: InstalledKernel, config: ModprobeConfig,
               runtime: Runtime) -> tuple[Decision, Decision]:
    """kmod's decision for this kernel's own modules directory (modules.dep, modules.alias):
    without and with the running kernel's modprobe.blacklist."""
    index = KernelIndex.read(root, kernel.release)
    return (decide(config, (), index),
            decide(config, tuple(runtime.kernel_params("modprobe.blacklist")), index))


def _check_vex(request: HostRequest, root: Root, kernels: list[InstalledKernel]) -> None:
    """A VEX statement names a kernel package: with none that dpkg names, --vex has nothing
    to state, and is refused now (not announced and left unwritten, an older file in place)."""
    if request.vex is None:
        return
    if not any(k.package and k.version and root.kind(k.directory) == "dir" for k in kernels):
        raise BadInput(f"--vex {request.vex.path}: dpkg's database under {root.path} names no "
                       "package for any installed kernel: no VEX statement to make; nothing "
                       "written (run without --vex)")


def _inspect(root: Root, kernel: InstalledKernel, runtime: Runtime) -> KernelState:
    """What the kernel's smc is, and whether it is loaded now."""
    running = kernel.release == runtime.release
    state = KernelState(kernel, running, *_smc(root, kernel), notes=list(kernel.notes))
    if kernel.module is not None:
        # through the root: a FIFO is never opened for reading, a 7 GB file never read
        data = root.read(kernel.module, MAX_INPUT_SIZE, "a kernel module")
        if data is None:
            state.verdict = "unknown"
            state.reasons = [f"{kernel.module} is not a regular file as the machine sees it "
                             "(a FIFO, device or directory): not read"]
        else:
            state.module_sha256 = hashlib.sha256(data).hexdigest()
            _judge(state, kernel)
    if running:
        state.loaded = None if runtime.loaded is None else "smc" in runtime.loaded
        _check_loaded_module(state, runtime)
    return state


def _loading(state: KernelState, runtime: Runtime, decision: Decision,
             now_decision: Decision) -> None:
    """Whether modprobe (and for the running kernel, the kernel itself) lets smc load."""
    running, kernel = state.running, state.kernel
    used = now_decision if running else decision
    every = [b for b in (used.every_load, *(_runtime_blocks(runtime) if running else ()))
             if b is not None]
    state.blocks = every + ([used.autoload] if used.autoload else [])
    # built in: always in the kernel, out of modprobe's reach
    state.loadable = (state.smc == "module" and not every) or state.smc == "builtin"
    state.autoloads = state.loadable and used.autoload is None
    if state.loadable and used.autoload is not None and kernel.has_smc_diag:
        state.notes.append(f"{used.autoload.text} stops net-pf-43 only: `modprobe smc` loads "
                           "smc, and so does smc_diag, whose own alias any user may request")


def _smc(root: Root, kernel: InstalledKernel) -> tuple[str, str, list[str]]:
    """(what SMC is in the kernel, the verdict before judging, reasons)."""
    if kernel.module_file is not None:
        return "module", "unknown", []
    if kernel.builtin:
        return "builtin", "unknown", ["SMC is built into the kernel (modules.builtin): no "
                                      "module to judge; the kernel image is not inspected"]
    if root.kind(kernel.directory) != "dir":
        return "no_modules", "unknown", [f"no modules directory {kernel.directory}: nothing "
                                         "can be loaded from disk"]
    return "none", "not_affected", ["no smc.ko in the kernel's modules: SMC is not built"]


def _judge(state: KernelState, kernel: InstalledKernel) -> None:
    assert kernel.module_file is not None
    try:
        judgement = judge(kernel.module_file, kernel.release)
    except SmcpatchError as exc:
        state.verdict, state.reasons = "unknown", [exc.one_line()]
        return
    state.verdict, state.reasons = judgement.verdict, list(judgement.reasons)
    if judgement.vermagic_ok is False:
        state.notes.append(f"{kernel.module}: {judgement.vermagic_detail}")
    if not kernel.debian_module:
        state.notes.append(f"{kernel.module} is not the kernel's own smc.ko (kernel/net/smc): "
                           "a local build (DKMS?) that modprobe loads first")


def _check_loaded_module(state: KernelState, runtime: Runtime) -> None:
    """A loaded smc that is not the module on disk (loaded before an upgrade or a DKMS build)."""
    if (not state.loaded or not runtime.smc_srcversion or state.kernel.module_file is None
            or not state.module_sha256):
        return
    try:
        on_disk = judge(state.kernel.module_file).srcversion
    except SmcpatchError:
        return
    if on_disk and on_disk != runtime.smc_srcversion:
        state.notes.append(f"the loaded smc (srcversion {runtime.smc_srcversion}) is not the "
                           f"smc.ko on disk ({on_disk}): its verdict may differ")


def _runtime_blocks(runtime: Runtime) -> list[Block]:
    """What the running kernel refuses whatever modprobe says."""
    blocks = []
    if "smc" in runtime.kernel_params("module_blacklist"):
        blocks.append(Block("module_blacklist=smc", "/proc/cmdline"))
    if runtime.modules_disabled:
        blocks.append(Block("modules_disabled=1", "/proc/sys/kernel/modules_disabled"))
    return blocks


def _notes(runtime: Runtime, root: Root, decision: Decision, change: Change | None,
           states: list[KernelState]) -> list[str]:
    notes = list(decision.notes)
    if root.is_host and runtime.loaded is None:
        notes.append("/proc/modules cannot be read here: whether smc is loaded now is unknown")
    if change is not None:
        notes.append(change.describe())
        if change.action == "mitigate" and any(s.running and s.loaded for s in states):
            notes.append("smc is loaded now and stays loaded: the block applies from the next "
                         "boot or after `rmmod smc`")
    missing = [s.kernel.release for s in states if s.kernel.package is None
               and s.smc != "no_modules"]
    if missing:
        notes.append(f"dpkg's database does not name the package of {', '.join(missing)} "
                     "(a kernel installed by hand?): no VEX statement for it")
    return notes


def summary(result: HostResult) -> str:
    """One line: the machine's verdict."""
    exposed = [s for s in result.kernels if s.exposed]
    if exposed:
        return "EXPOSED: " + _exposure(exposed, result.root)
    bad = [s for s in result.kernels if s.verdict in BAD and s.smc == "module"]
    if bad:
        names = ", ".join(s.kernel.release for s in bad)
        block = bad[0].blocks[0] if bad[0].blocks else "not loadable"
        return (f"not exposed: {names} {'has' if len(bad) == 1 else 'have'} a vulnerable "
                f"smc.ko, but every load is blocked by {block}; upgrading is still advised")
    return "not exposed: no installed kernel has a vulnerable smc.ko"


def _exposure(exposed: list[KernelState], root: str) -> str:
    """What is exposed and the steps out: block or upgrade what can load, unload what is."""
    module = ("a vulnerable or undecided" if any(s.verdict == "unknown" for s in exposed)
              else "a vulnerable")

    def names(states: list[KernelState]) -> str:
        return ", ".join(s.kernel.release + (" (running)" if s.running else "") for s in states)

    loaded = [s for s in exposed if s.loaded]
    maybe = [s for s in exposed if s.running and s.loaded is None and not s.loadable]
    loadable = [s for s in exposed if s.loadable and not s.loaded]
    said = ([f"{module} smc is loaded in {names(loaded)}"] if loaded else []) + \
        ([f"smc may be loaded in {names(maybe)} (/proc/modules unreadable)"] if maybe else []) + \
        ([f"{module} smc.ko can load in {names(loadable)}"] if loadable else [])
    mitigate = command("host", *(["--root", root] if root != "/" else []), "--mitigate")
    steps = ([f"upgrade (see advice) or block smc now with `{mitigate}`"]
             if any(s.loadable for s in exposed) else []) + \
        (["unload it with `rmmod smc` or reboot"] if loaded else [])
    return "; ".join(said) + ": " + ", then ".join(steps) if steps else "; ".join(said)


# -- outputs -------------------------------------------------------------------------------------
def _write(request: HostRequest, result: HostResult) -> None:
    if request.json_path:
        write_json(request.json_path, result.to_json())
    if request.vex:
        statements = vex_statements(result)
        if statements:
            vex.write(request.vex, statements)


def vex_statements(result: HostResult) -> list[ProductStatement]:
    """One statement per installed kernel package (what its smc.ko is), with what this machine
    does about it in the evidence: a block is a fact of this machine, not of the package, so a
    vulnerable package stays `affected`."""
    out = []
    for state in result.kernels:
        k = state.kernel
        if not (k.package and k.version) or state.smc == "no_modules":
            continue
        status = status_of(state.verdict)
        module = (File((k.module or "").lstrip("/"), state.module_sha256)
                  if state.module_sha256 else None)
        action = state.advice.describe() if state.advice and status is Status.AFFECTED else None
        out.append(ProductStatement.debian(
            k.package, k.version, k.arch or _arch(k.release), status, _vex_notes(state),
            module=module, action=action or (REBUILD.format(release=k.release)
                                             if status is Status.AFFECTED else None),
            justification=(Justification.COMPONENT_NOT_PRESENT
                           if status is Status.NOT_AFFECTED else None)))
    return out


def _vex_notes(state: KernelState) -> str:
    k = state.kernel
    seen = (f"smcpatch host inspected {k.module or k.directory} of {k.package} {k.version}: "
            + "; ".join(state.reasons[-1:]))
    if state.verdict not in BAD:
        return seen
    if state.exposed:
        here = "exposed (" + ("loaded" if state.loaded else "loadable") + ")"
    elif state.blocks:
        here = f"every load of smc is blocked by {state.blocks[0]}"
    else:
        here = "not loadable"
    return f"{seen}. On this machine: {here}"


def _arch(release: str) -> str:
    try:
        return arch_of(versions.parse(release).flavour)
    except BadInput:
        return "amd64"
