"""A livepatch module for one Debian kernel: the fixed functions of our verified after/ sources,
compiled against the kernel's headers with its own compiler, on a klp_object "smc".

Why extraction and not the whole file: compiling all of after/smc_clc.c into the livepatch would
define every global function of that file a second time and pull in the symbols they use from
other files of smc.ko, which are not exported (modpost cannot resolve them, and a livepatch could
reach them only through klp relocations, which kpatch-build writes and we do not). So the
generator copies, from the after/ file, only the fixed function (renamed `livepatch_<name>`,
static) and the file's static functions it reaches, transitively, beside the file's own
#include and single-line #define lines; the file's headers are copied beside it. Whatever the
copy still needs from elsewhere is an undefined symbol of the built module, checked against the
kernel's Module.symvers: a symbol vmlinux does not export refuses the fix (BadInput).

The C is read by a small lexer that blanks comments, strings and character literals, so a brace
inside them never counts; a top-level item ends at `;` or at the `}` that closes its first `{`.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, BuildError
from ..inspection.elf import open_elf
from ..inspection.modcheck import read_module_symvers
from ..pipeline import build
from ..pipeline.fetch import Workspace

MODULE_NAME = "livepatch_smc_cve_2025_40168"
KLP_OBJECT = "smc"  # the module whose functions are replaced
PREFIX = "livepatch_"
SOURCE_FILE = "smc_clc.c"
# Only the functions a livepatch of ours may replace, each with the file it lives in.
FUNCTIONS = {"smc_clc_prfx_match": SOURCE_FILE}

_IDENT = re.compile(r"[A-Za-z_]\w*")
_CALL_NAME = re.compile(r"([A-Za-z_]\w*)\s*\(")


@dataclass(frozen=True)
class Definition:
    """One top-level function definition of a C file."""

    name: str
    text: str
    static: bool


def blank(source: str) -> str:
    """The source with comments, string and character literals replaced by spaces (newlines
    kept), so offsets stay the same and braces inside them do not count."""
    out = list(source)
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
        elif source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
        elif c in "\"'":
            end = i + 1
            while end < n and source[end] != c and source[end] != "\n":
                end += 2 if source[end] == "\\" else 1
            end = min(end + 1, n)
        else:
            i += 1
            continue
        for j in range(i, end):
            if out[j] != "\n":
                out[j] = " "
        i = end
    return "".join(out)


def definitions(source: str) -> dict[str, Definition]:
    """The file's top-level function definitions by name (preprocessor lines are skipped)."""
    masked = blank(source)
    masked = re.sub(r"(?m)^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", lambda m: " " * len(m.group()), masked)
    found: dict[str, Definition] = {}
    start, depth, i = 0, 0, 0
    opened = -1
    while i < len(masked):
        c = masked[i]
        if c == "{":
            if depth == 0:
                opened = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                _maybe_function(source, masked, start, opened, i + 1, found)
                # a struct/union definition ends with `;` after its `}`: skip to it
                start = i + 1
        elif c == ";" and depth == 0:
            start = i + 1
        i += 1
    return found


def _maybe_function(source: str, masked: str, start: int, opened: int, end: int,
                    found: dict[str, Definition]) -> None:
    header = masked[start:opened]
    if "=" in header or "(" not in header:  # an initializer, a struct or an enum
        return
    names = _CALL_NAME.findall(header)
    if not names:
        return
    name = names[0]
    words = set(_IDENT.findall(header.split("(", 1)[0]))
    first = start + len(header) - len(header.lstrip())  # past blanked comments and # lines
    found[name] = Definition(name, source[first:end] + "\n", "static" in words)


def needed(defs: dict[str, Definition], roots: list[str]) -> list[str]:
    """The roots and the file's static functions they reach, in the file's order."""
    wanted: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in wanted or name not in defs:
            continue
        wanted.add(name)
        body = blank(defs[name].text)
        todo.extend(ident for ident in set(_IDENT.findall(body))
                    if ident in defs and defs[ident].static and ident != name)
    return [name for name in defs if name in wanted]


def generate(source: str, functions: list[str], module_name: str = MODULE_NAME,
             origin: str = "") -> str:
    """The livepatch's C source: the file's includes and one-line defines, the static helpers
    the fixed functions reach, the fixed functions renamed, and the klp structures."""
    defs = definitions(source)
    missing = [f for f in functions if f not in defs]
    if missing:
        raise BadInput(f"{', '.join(missing)} is not defined in {SOURCE_FILE}: no livepatch")
    rename = re.compile(r"\b(" + "|".join(map(re.escape, functions)) + r")\b")
    bodies = []
    for name in needed(defs, functions):
        text = rename.sub(lambda m: PREFIX + m.group(1), defs[name].text)
        if name in functions and not defs[name].static:
            text = "static " + text
        bodies.append(text)
    includes = [line for line in source.splitlines() if re.match(r"\s*#\s*include\b", line)]
    defines = [line for line in source.splitlines()
               if re.match(r"\s*#\s*define\b", line) and not line.rstrip().endswith("\\")]
    funcs = "".join(f'\t{{\n\t\t.old_name = "{f}",\n\t\t.new_func = {PREFIX}{f},\n\t}},\n'
                    for f in functions)
    return f"""\
// SPDX-License-Identifier: GPL-2.0
/*
 * {module_name}: made by smcpatch{f' from {origin}' if origin else ''}.
 * The functions below are copied from the fixed {SOURCE_FILE}; the replacements are renamed
 * {PREFIX}<name> and registered on klp_object "{KLP_OBJECT}" (samples/livepatch).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
{chr(10).join(includes)}

{chr(10).join(defines)}

{chr(10).join(bodies)}
static struct klp_func funcs[] = {{
{funcs}\t{{ }}
}};

static struct klp_object objs[] = {{
\t{{
\t\t.name = "{KLP_OBJECT}",
\t\t.funcs = funcs,
\t}}, {{ }}
}};

static struct klp_patch patch = {{
\t.mod = THIS_MODULE,
\t.objs = objs,
}};

static int {module_name}_init(void)
{{
\treturn klp_enable_patch(&patch);
}}

static void {module_name}_exit(void)
{{
}}

module_init({module_name}_init);
module_exit({module_name}_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("smcpatch livepatch: {', '.join(functions)} (CVE-2025-40168)");
MODULE_INFO(livepatch, "Y");
"""


def kbuild(module_name: str = MODULE_NAME) -> str:
    return f"obj-m := {module_name}.o\n"


@dataclass
class Built:
    ko: Path
    source: Path
    log: Path
    seconds: float
    undefined: list[str]
    functions: list[str]
    notes: list[str] = field(default_factory=list)


def write_sources(smc_dir: Path, work: Path, functions: list[str], origin: str) -> Path:
    """The livepatch's source tree in `work`: its C file, a Kbuild and the file's headers."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for header in smc_dir.glob("*.h"):  # the quoted includes ("smc.h") resolve beside the .c
        shutil.copy2(header, work / header.name)
    source = (smc_dir / SOURCE_FILE).read_text(errors="replace")
    c_file = work / f"{MODULE_NAME}.c"
    c_file.write_text(generate(source, functions, origin=origin))
    (work / "Kbuild").write_text(kbuild())
    return c_file


def build_livepatch(ws: Workspace, env: build.BuildEnv, smc_dir: Path, work: Path,
                    functions: list[str], origin: str, jobs: int | None = None) -> Built:
    """Generate, then `make -C KDIR M=work modules` as the pipeline builds smc.ko; every
    undefined symbol of the result must be one vmlinux exports."""
    c_file = write_sources(smc_dir, work, functions, origin)
    log = work / "build.log"
    started = time.monotonic()
    # modpost only warns on an unexported symbol: our own check below says which, in one line
    build._make(ws.kdir, work, log, jobs, env, ("KBUILD_MODPOST_WARN=1",))
    seconds = time.monotonic() - started
    ko = work / f"{MODULE_NAME}.ko"
    if not ko.exists():
        raise BuildError(f"make succeeded but produced no {ko.name} (see {log})")
    undefined = undefined_symbols(ko)
    check_exported(undefined, ws.symvers, functions)
    return Built(ko=ko, source=c_file, log=log, seconds=seconds, undefined=undefined,
                 functions=functions)


def undefined_symbols(ko: Path) -> list[str]:
    elf = open_elf(ko)
    return sorted({s.name for s in elf.symbols if s.shndx == 0 and s.name})


def check_exported(undefined: list[str], symvers: Path, functions: list[str]) -> None:
    """Refuse a replacement that needs a symbol vmlinux does not export."""
    exported = vmlinux_exports(symvers)
    missing = [name for name in undefined if name not in exported]
    if missing:
        raise BadInput(f"{', '.join(functions)} cannot be live-patched: the replacement needs "
                       f"{', '.join(missing)}, which the kernel does not export (Module.symvers) "
                       "and which is not a static function of its file to copy")


def vmlinux_exports(symvers: Path) -> set[str]:
    """The symbols vmlinux itself exports (a module's export would tie the livepatch to it)."""
    read_module_symvers(symvers)  # the one reader's checks: a malformed file raises
    out = set()
    for line in symvers.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[2] == "vmlinux":
            out.add(fields[1])
    return out


def shipped_function_check(shipped: Path, function: str) -> None:
    """Debian's module must have the function as a real symbol that ftrace can hook: refused
    when Debian's build inlined it (no symbol) or gave it no __fentry__ call."""
    elf = open_elf(shipped)
    frags = [f for f in elf.function_fragments(function) if f.symbol.name == function]
    if not frags:
        raise BadInput(f"{function} is not a function of Debian's {shipped.name} (its build "
                       "inlined it): it cannot be live-patched")
    frag = frags[0]
    relocs = elf.relocations_in(frag.section.index, frag.start, frag.start + 16)
    if not any(elf.describe(r)[1] == "__fentry__" for r in relocs):
        raise BadInput(f"{function} in Debian's {shipped.name} has no __fentry__ call at its "
                       "start: ftrace, hence livepatch, cannot redirect it")
