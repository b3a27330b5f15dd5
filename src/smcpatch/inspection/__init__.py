"""The inspect stage: read smc.ko (or smc_clc.o) and decide whether smc_clc_prfx_match is fixed
against CVE-2025-40168; check that the kernel will load the module; compare two builds.

Split as pyelftools splits elftools.elf and elftools.dwarf:

- :mod:`.elf`: loading (.ko.xz/.zst/.gz decompressed in memory) and reading the ELF object:
  sections, symbols, relocations (one reader; types by name in a table keyed by machine),
  function fragments (``.cold``, ``.part.N``), ``.modinfo``.
- :mod:`.dwarf`: the subroutines inlined into a function, from the DWARF.
- :mod:`.verdict`: the verdict principle (RCU read lock taken, no dst reference, DWARF inlines
  agree) and :func:`inspect_module`/:func:`inspect_function`.
- :mod:`.model`: the result objects (:class:`ModuleInfo`, :class:`FunctionEvidence`,
  :class:`CallSite`).
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
from .fndiff import (
    changed_between,
    changed_functions,
    function_bodies,
    normalize_symbol,
    same_function,
)
from .judge import Judgement, evidence_json, judge
from .modcheck import check_modversions, check_vermagic, read_module_symvers
from .model import CallSite, FunctionEvidence, ModuleInfo, Verdict
from .verdict import (
    DST_REF,
    DWARF_FIXED,
    DWARF_VULNERABLE,
    FUNCTION,
    RCU_LOCK,
    RCU_UNLOCK,
    inspect_function,
    inspect_module,
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
    "FunctionEvidence",
    "InspectError",
    "Judgement",
    "ModuleInfo",
    "Verdict",
    "ZstdMissing",
    "changed_between",
    "changed_functions",
    "evidence_json",
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
