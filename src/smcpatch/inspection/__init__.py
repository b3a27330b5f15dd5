"""The inspect stage: read smc.ko (or tls.ko, or smc_clc.o) and decide, for every fix of the
upstream series the module carries (CVE-2025-40168 in smc_clc_prfx_match first), whether it is
in; check that the kernel will load the module; compare two builds.

Split as pyelftools splits elftools.elf and elftools.dwarf:

- :mod:`.loading`: reading and decompressing (.ko.xz/.zst/.gz, in memory), :func:`.guard`.
- :mod:`.machines`, :mod:`.records`, :mod:`.relocs`, :mod:`.elf`: the ELF object: the machines'
  relocation types, the records, the one relocation reader, and the view (sections, symbols,
  function fragments such as ``.cold``/``.part.N``, ``.modinfo``).
- :mod:`.dwarf`: the subroutines inlined into a function, from the DWARF.
- :mod:`.fixes`: the fix signatures (package data, data/fixes/*.toml).
- :mod:`.verdict`: the verdict principle (RCU read lock taken, no dst reference, DWARF inlines
  agree), every fix judged by it, and :func:`inspect_module`/:func:`inspect_function`.
- :mod:`.model`: the result objects (:class:`ModuleInfo`, :class:`FixResult`,
  :class:`FunctionEvidence`, :class:`CallSite`).
- :mod:`.modcheck`: vermagic and modversions against the target kernel's Module.symvers.
- :mod:`.signature`: the appended signature (signer, hash algorithm), read.
- :mod:`.judge`: one module judged the same way everywhere: verdict, signature, load checks.
- :mod:`.fndiff`: kpatch-like function comparison (normalized bodies) between two builds.
- :mod:`.disasm`: the instruction-stream second opinion (objdump) on "changed" functions.

Every failure reaches the caller as :class:`~smcpatch.errors.InspectError`.
"""

from __future__ import annotations

from ..errors import InspectError
from .disasm import instruction_stream, layout_only_change, objdump_available
from .elf import MAX_ELF_SIZE, ZstdMissing, load_elf_bytes
from .fixes import FixSignature, fixes_for_module, load_fixes
from .fndiff import (
    changed_between,
    changed_functions,
    function_bodies,
    normalize_symbol,
    same_function,
)
from .judge import Judgement, evidence_json, judge
from .modcheck import check_modversions, check_vermagic, read_module_symvers
from .model import CallSite, FixResult, FixVerdict, FunctionEvidence, ModuleInfo, Verdict
from .verdict import (
    DST_REF,
    DWARF_FIXED,
    DWARF_VULNERABLE,
    FUNCTION,
    RCU_LOCK,
    RCU_UNLOCK,
    inspect_function,
    inspect_module,
    judge_fixes,
)

__all__ = [
    "DST_REF",
    "DWARF_FIXED",
    "DWARF_VULNERABLE",
    "FUNCTION",
    "MAX_ELF_SIZE",
    "RCU_LOCK",
    "RCU_UNLOCK",
    "CallSite",
    "FixResult",
    "FixSignature",
    "FixVerdict",
    "FunctionEvidence",
    "InspectError",
    "Judgement",
    "ModuleInfo",
    "Verdict",
    "ZstdMissing",
    "changed_between",
    "changed_functions",
    "evidence_json",
    "fixes_for_module",
    "judge_fixes",
    "load_fixes",
    "check_modversions",
    "check_vermagic",
    "function_bodies",
    "inspect_function",
    "judge",
    "inspect_module",
    "instruction_stream",
    "layout_only_change",
    "load_elf_bytes",
    "normalize_symbol",
    "objdump_available",
    "read_module_symvers",
    "same_function",
]
