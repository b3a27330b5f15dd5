"""Inspect stage: the before, after and shipped modules judged (inspection), vermagic and
modversions against the kernel, the functions that changed between before and after, the
sibling fixes' functions; cached beside the build while modules and code are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import inspection
from ..data import FIXES_DIR
from ..errors import BadInput, InspectError
from ..plumbing.cache import Cache, atomic_dir, entry_is_current, hash_inputs, read_manifest
from . import report as report_module  # what a module's report holds is part of the key
from .build import BuildResult
from .classify import FixState
from .fetch import Workspace
from .report import ModuleReport, TargetReport

PRIMARY_FUNCTION = "smc_clc_prfx_match"

# Report fields that inspection fills in; cached as JSON beside the build.
INSPECT_FIELDS = ("before", "after", "shipped", "shipped_same_as_after", "shipped_same_as_before",
                  "vermagic_ok", "vermagic_detail", "modversions_ok", "modversions_mismatches",
                  "changed_functions", "expected_changed_functions", "layout_only_functions",
                  "inlined_patched_functions", "sibling_verdicts")


def inspect_target(cache: Cache, ws: Workspace, built: BuildResult,
                    states: list[FixState], report: TargetReport) -> None:
    """Inspection is pure in its inputs: reuse its results while modules and code are unchanged."""
    code = sorted(Path(inspection.__file__).parent.glob("*.py"))  # the whole inspection package
    code += sorted(FIXES_DIR.glob("*.toml"))  # and the fix signatures it judges by
    inputs = [built.before.ko, built.after.ko, built.before.clc_object, built.after.clc_object,
              ws.symvers, *code, Path(__file__), Path(report_module.__file__)]
    if ws.shipped_module is not None:
        inputs.append(ws.shipped_module)
    key = hash_inputs([_file_identity(p) for p in inputs], ws.target.release,
                      sorted({f for s in states for f in s.variant.functions}))
    entry = cache.dir("inspect", ws.target.key)
    if entry.exists() and _load_cached(entry, key, report):
        report.from_cache["inspect"] = True
        return
    _inspect(ws, built, states, report)
    with atomic_dir(entry, key, content="full") as tmp:
        data = {name: report.to_json()[name] for name in INSPECT_FIELDS}
        (tmp / "inspect.json").write_text(json.dumps(data))
    report.from_cache["inspect"] = False


def inspect_shipped(ws: Workspace, report: TargetReport) -> None:
    """Debian's own module, judged (a kernel without served sources has only this)."""
    if ws.shipped_module is None:
        return
    shipped = inspection.inspect_module(ws.shipped_module)
    report.shipped = ModuleReport.from_info(shipped, ws.shipped_module)


def _sibling_verdicts(built: BuildResult, states: list[FixState],
                      present: set[str]) -> list[dict[str, str]]:
    """Every other patched function where the vulnerable pattern lives (the before-build takes a
    dst reference in it), judged by the same principle as smc_clc_prfx_match."""
    verdicts = []
    for state in states:
        for function in state.variant.functions:
            if function == PRIMARY_FUNCTION or function not in present:
                continue
            try:
                before = inspection.inspect_function(built.before.ko, function).evidence
            except InspectError:  # only compiler clones of it exist (foo.isra.0): a helper
                continue
            if not before.dst_ref_sites:
                continue  # a helper (e.g. the *_rcu prefix walks): no dst handling of its own
            after = inspection.inspect_function(built.after.ko, function).evidence
            verdicts.append({"fix": state.fix_id, "function": function,
                             "before": before.verdict, "after": after.verdict})
    return verdicts


def _load_cached(entry: Path, key: str, report: TargetReport) -> bool:
    """The cached result, when its key and its content digest hold and it reads back whole; a
    damaged or edited one is inspected again (with a note), never trusted, never an error."""
    if not entry_is_current(entry, key, "full"):
        manifest = read_manifest(entry)
        if manifest is not None and manifest.get("key") == key:  # its inputs are the same
            report.notes.append("the cached inspection result did not match its digest: "
                                "inspected again")
        return False
    try:
        saved = json.loads((entry / "inspect.json").read_text())
        values = {name: (ModuleReport.from_json(saved[name])
                         if name in ("before", "after", "shipped") and saved[name] is not None
                         else saved[name]) for name in INSPECT_FIELDS}
    except (OSError, ValueError, KeyError, TypeError, BadInput):
        report.notes.append("the cached inspection result could not be read: inspected again")
        return False
    for name, value in values.items():
        setattr(report, name, value)
    return True


def _file_identity(path: Path) -> str:
    """Path, size, mtime, ctime and inode: any rewrite of a module (an atomic rename, an edit in
    place with its mtime put back) changes it."""
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def _inspect(ws: Workspace, built: BuildResult,
             states: list[FixState], report: TargetReport) -> None:
    symvers = inspection.read_module_symvers(ws.symvers)
    before = inspection.inspect_module(built.before.ko, dwarf_object=built.before.clc_object)
    after = inspection.inspect_module(built.after.ko, dwarf_object=built.after.clc_object)
    report.before = ModuleReport.from_info(before, built.before.ko)
    report.after = ModuleReport.from_info(after, built.after.ko)

    report.vermagic_ok, report.vermagic_detail = inspection.check_vermagic(after, ws.target.release)
    report.modversions_ok, report.modversions_mismatches = inspection.check_modversions(
        after, symvers)

    patched = {f for s in states for f in s.variant.functions}
    # a patched static helper the compiler inlined everywhere has no code of its own to differ
    bodies_before = inspection.function_bodies(built.before.ko)
    bodies_after = inspection.function_bodies(built.after.ko)
    present = {name.split(".", 1)[0] for name in (*bodies_before, *bodies_after)}
    report.expected_changed_functions = sorted(patched & present)
    report.inlined_patched_functions = sorted(patched - present)
    changed = inspection.changed_between(bodies_before, bodies_after)
    # A function the patch doesn't touch may differ only in padding (its start moved): say so
    # apart, after checking its instruction stream is the same.
    layout_only = [f for f in changed if f not in report.expected_changed_functions
                   and inspection.layout_only_change(built.before.ko, built.after.ko, f)]
    report.changed_functions = sorted(set(changed) - set(layout_only))
    report.layout_only_functions = sorted(layout_only)
    report.sibling_verdicts = _sibling_verdicts(built, states, present)

    if ws.shipped_module is not None:
        inspect_shipped(ws, report)
        fixed_side = built.after.ko if report.source_state == "fixed" else None
        if fixed_side is not None:
            report.shipped_same_as_after = inspection.same_function(
                ws.shipped_module, fixed_side, PRIMARY_FUNCTION)
        else:
            report.shipped_same_as_before = inspection.same_function(
                ws.shipped_module, built.before.ko, PRIMARY_FUNCTION)
