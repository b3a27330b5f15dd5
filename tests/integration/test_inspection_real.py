"""The inspect stage on real Debian modules (smcpatch.inspection; the unit tests on small gcc-built
objects are in tests/inspection/).

Every real module: the shipped ones and our builds in the integration tests' cache, or set
SMCPATCH_TEST_MODULES_DIR to a directory holding smc.ko / smc.ko.xz files (searched
recursively), e.g. extracted Debian linux-image packages.

Fuzz what `inv inspect` does with mutated real modules: thousands of cases, bounded in time.

The inputs are Debian's own smc.ko of 6.1.176 (stripped, uncompressed), its 6.12.107 smc.ko.xz,
and our build's smc_clc.o (with DWARF). Mutations aim at what the inspector reads: the ELF header,
the section headers, the symbol of smc_clc_prfx_match, its relocations, random bytes, truncation.
Every case must end in a verdict (fixed / vulnerable / unknown) or an InspectError: never another
exception (a traceback for the user), never a hang. Inputs that once crashed the inspector are
kept as recipes (offset + bytes against the real module) in tests/corpus/inspect/.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smcpatch.commands import inspect as inspect_cmd
from smcpatch.data import DEFAULT_PATCHES
from smcpatch.errors import InspectError
from smcpatch.inspection import ModuleInfo, check_vermagic, inspect_module
from smcpatch.pipeline import build, variants
from smcpatch.pipeline.fetch import Workspace
from smcpatch.plumbing.cache import Cache
from tests.schemas import assert_valid

pytestmark = pytest.mark.integration  # real Debian kernels (test_real_module: already fetched)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "inspect"
CASE_SECONDS = 10  # a hang guard per case; real cases take 10-150 ms


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"inspect took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Layout:
    """Where the interesting bytes of a module are (offsets into the file)."""

    data: bytes
    shoff: int
    shnum: int
    sections: dict[str, tuple[int, int, int]]  # name -> (header offset, data offset, size)
    function_symbol: int  # file offset of smc_clc_prfx_match's Elf64_Sym
    rela: list[tuple[int, int]]  # (offset, size) of the .rela sections of the function's code


def layout_of(data: bytes) -> Layout:
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]

    def name(h: tuple[int, ...]) -> str:
        start = names_off + h[0]
        return data[start:data.index(b"\0", start)].decode()

    sections = {name(h): (shoff + i * shentsize, h[4], h[5]) for i, h in enumerate(headers)}
    symtab = next(h for h in headers if h[1] == 2)  # SHT_SYMTAB
    strtab = headers[symtab[6]]
    function_symbol = 0
    for off in range(symtab[4], symtab[4] + symtab[5], 24):
        st_name, = struct.unpack_from("<I", data, off)
        start = strtab[4] + st_name
        if data[start:data.index(b"\0", start)] == b"smc_clc_prfx_match":
            function_symbol = off
    assert function_symbol, "smc_clc_prfx_match not in the symbol table"
    rela = [(h[4], h[5]) for h in headers if h[1] == 4 and name(h).startswith(".rela.text")]
    return Layout(data, shoff, shnum, sections, function_symbol, rela)


INTERESTING = [0, 1, 2, 7, 0x40, 0x7F, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 1 << 32, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
ELF_HEADER_FIELDS = [(4, 1), (5, 1), (16, 2), (18, 2), (20, 4), (40, 8), (58, 2), (60, 2),
                     (62, 2)]
SHDR_FIELDS = [(0, 4), (4, 4), (8, 8), (24, 8), (32, 8), (40, 4), (44, 4), (48, 8), (56, 8)]
SYM_FIELDS = [(0, 4), (4, 1), (6, 2), (8, 8), (16, 8)]
RELA_FIELDS = [(0, 8), (8, 8), (12, 4), (16, 8)]


def put(data: bytearray, offset: int, size: int, value: int) -> None:
    if offset >= 0 and offset + size <= len(data):
        data[offset:offset + size] = (value % (1 << (8 * size))).to_bytes(size, "little")


def values(length: int) -> st.SearchStrategy[int]:
    near = [length - 1, length, length + 1, length // 2]
    return st.one_of(st.sampled_from(INTERESTING + near), st.integers(0, (1 << 64) - 1))


@st.composite
def field_mutation(draw: st.DrawFn, lay: Layout, where: str) -> bytes:
    data = bytearray(lay.data)
    for _ in range(draw(st.integers(1, 3))):
        if where == "header":
            off, size = draw(st.sampled_from(ELF_HEADER_FIELDS))
        elif where == "section":
            index = draw(st.integers(0, lay.shnum - 1))
            field_off, size = draw(st.sampled_from(SHDR_FIELDS))
            off = lay.shoff + index * 64 + field_off
        elif where == "symbol":
            field_off, size = draw(st.sampled_from(SYM_FIELDS))
            off = lay.function_symbol + field_off
        else:  # a relocation of the function's code sections
            start, length = draw(st.sampled_from(lay.rela))
            entry = draw(st.integers(0, max(0, length // 24 - 1)))
            field_off, size = draw(st.sampled_from(RELA_FIELDS))
            off = start + entry * 24 + field_off
        put(data, off, size, draw(values(len(data))))
    return bytes(data)


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 16))):
        pos = draw(st.integers(0, len(out) - 1))
        out[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[:draw(st.integers(0, len(out)))]
    return bytes(out)


def check_inspect(path: Path, data: bytes) -> str:
    """What `inv inspect` does, in process: a verdict or an InspectError, in bounded time."""
    path.write_bytes(data)
    with time_limit(CASE_SECONDS):
        try:
            out = inspect_cmd.run(path)
            result, code = out.to_json(), out.exit_code
        except InspectError as exc:
            message = exc.one_line()
            assert message and "\n" not in message
            return "error"
    assert result["verdict"] in ("fixed", "vulnerable", "unknown")
    assert code in (0, 1, 2)
    assert_valid(json.loads(json.dumps(result)), "smcpatch-inspect/1")  # the --json output
    return str(result["verdict"])


SETTINGS = dict(deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def shipped_61(workspace_for: Callable[[str], Workspace]) -> bytes:
    module = workspace_for("6.1.176").shipped_module
    assert module is not None and module.suffix == ".ko"
    return module.read_bytes()


@pytest.fixture(scope="module")
def shipped_612_xz(workspace_for: Callable[[str], Workspace]) -> bytes:
    module = workspace_for("6.12.107").shipped_module
    assert module is not None and module.name.endswith(".xz")
    return module.read_bytes()


@pytest.fixture(scope="module")
def clc_object(workspace_for: Callable[[str], Workspace], test_cache: Cache) -> bytes:
    """smc_clc.o of our own build of 6.1.176 (DWARF included), from the test cache's builds."""
    ws = workspace_for("6.1.176")
    found = sorted(test_cache.root.glob(f"builds/{ws.target.key}__*/out/before/smc_clc.o"))
    if not found:  # built by the integration tests; build it here if they haven't run yet
        from smcpatch.pipeline import classify as patching

        fixes = [f for f in patching.load_series(DEFAULT_PATCHES, "all") if f.default]
        states = patching.classify(ws.source_tree, fixes)
        made = variants.make_variants(ws.source_tree, states,
                                      test_cache.dir("variants", f"{ws.target.key}__fuzz"))
        built = build.build_variants(test_cache, f"{ws.target.key}__fuzz", ws.kdir,
                                     made.before / "net" / "smc",
                                     made.after / "net" / "smc")
        found = [built.before.clc_object]
    return found[0].read_bytes()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="smcpatch-fuzz-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------- fuzzing


def test_unmutated_inputs_have_their_verdicts(shipped_61: bytes, shipped_612_xz: bytes,
                                              clc_object: bytes, scratch: Path) -> None:
    assert check_inspect(scratch / "smc.ko", shipped_61) == "vulnerable"
    assert check_inspect(scratch / "smc.ko.xz", shipped_612_xz) == "vulnerable"
    assert check_inspect(scratch / "smc_clc.o", clc_object) == "vulnerable"


@pytest.mark.parametrize(("where", "examples"), [("header", 250), ("section", 500),
                                                 ("symbol", 150), ("relocation", 200)])
def test_fuzz_fields_of_a_real_module(shipped_61: bytes, scratch: Path, where: str,
                                      examples: int) -> None:
    lay = layout_of(shipped_61)
    seen: dict[str, int] = {}

    @settings(max_examples=examples, **SETTINGS)  # type: ignore[arg-type]
    @given(field_mutation(lay, where))
    def case(data: bytes) -> None:
        outcome = check_inspect(scratch / "smc.ko", data)
        seen[outcome] = seen.get(outcome, 0) + 1

    case()
    assert sum(seen.values()) >= examples // 2, seen


def test_fuzz_random_bytes_and_truncation(shipped_61: bytes, scratch: Path) -> None:
    @settings(max_examples=400, **SETTINGS)  # type: ignore[arg-type]
    @given(byte_mutation(shipped_61))
    def case(data: bytes) -> None:
        check_inspect(scratch / "smc.ko", data)

    case()


def test_fuzz_every_truncation_of_the_headers(shipped_61: bytes, scratch: Path) -> None:
    """Cut inside the ELF header, inside each section header and just short of each section."""
    lay = layout_of(shipped_61)
    cuts = set(range(0, 72))
    cuts |= {lay.shoff + i * 64 + d for i in range(lay.shnum) for d in (0, 31, 63)}
    cuts |= {off + size - 1 for _, off, size in lay.sections.values() if size}
    for cut in sorted(c for c in cuts if c < len(shipped_61)):
        check_inspect(scratch / "smc.ko", shipped_61[:cut])


def test_fuzz_compressed_module(shipped_612_xz: bytes, scratch: Path) -> None:
    @settings(max_examples=150, **SETTINGS)  # type: ignore[arg-type]
    @given(byte_mutation(shipped_612_xz))
    def case(data: bytes) -> None:
        check_inspect(scratch / "smc.ko.xz", data)

    case()


def test_fuzz_object_with_dwarf(clc_object: bytes, scratch: Path) -> None:
    lay = layout_of(clc_object)

    @settings(max_examples=40, **SETTINGS)  # type: ignore[arg-type]
    @given(st.one_of(byte_mutation(clc_object), field_mutation(lay, "section"),
                     field_mutation(lay, "relocation")))
    def case(data: bytes) -> None:
        check_inspect(scratch / "smc_clc.o", data)

    case()


# --------------------------------------------------------------------------- corpus


def corpus_cases() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


def apply_recipe(recipe: dict[str, Any], inputs: dict[str, bytes]) -> bytes:
    data = bytearray(inputs[recipe["input"]])
    for offset, hexbytes in recipe.get("write", []):
        data[offset:offset + len(hexbytes) // 2] = bytes.fromhex(hexbytes)
    if "truncate" in recipe:
        data = data[:recipe["truncate"]]
    return bytes(data)


@pytest.mark.parametrize("recipe_path", corpus_cases(), ids=lambda p: p.stem)
def test_corpus_regressions(recipe_path: Path, shipped_61: bytes, shipped_612_xz: bytes,
                            clc_object: bytes, scratch: Path) -> None:
    recipe = json.loads(recipe_path.read_text())
    inputs = {"shipped-6.1.176-smc.ko": shipped_61, "shipped-6.12.107-smc.ko.xz": shipped_612_xz,
              "build-6.1.176-smc_clc.o": clc_object}
    data = apply_recipe(recipe, inputs)
    name = next(n for n in ("smc.ko.xz", "smc_clc.o", "smc.ko") if recipe["input"].endswith(n))
    outcome = check_inspect(scratch / name, data)
    assert outcome == recipe["expect"], recipe


def test_cli_on_mutated_modules_is_one_line_or_a_verdict(shipped_61: bytes, tmp_path: Path) -> None:
    """`inv inspect` itself, on a few mutants of each kind: no traceback, one line on error."""
    lay = layout_of(shipped_61)
    mutants = {
        "truncated-header": shipped_61[:40],
        "truncated-middle": shipped_61[: len(shipped_61) // 2],
        "shoff-past-end": bytes(_patched(shipped_61, 40, 8, len(shipped_61) + 100)),
        "symtab-size-huge": bytes(_patched(shipped_61, lay.sections[".symtab"][0] + 32, 8,
                                           1 << 40)),
        "symbol-in-no-section": bytes(_patched(shipped_61, lay.function_symbol + 6, 2, 0xFFF0)),
    }
    for label, data in mutants.items():
        path = tmp_path / f"{label}.ko"
        path.write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "invoke", "inspect", "--module", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert "Traceback" not in proc.stdout + proc.stderr, label
        assert proc.returncode in (0, 1, 2), (label, proc.returncode, proc.stderr)
        if proc.returncode == 2 and proc.stderr.strip():
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:"), (label, lines)


def _patched(data: bytes, offset: int, size: int, value: int) -> bytearray:
    out = bytearray(data)
    put(out, offset, size, value)
    return out


# --------------------------------------------------------------------------- every real module


#: Debian's own (stripped) modules, established in DESIGN.md "Facts established". Our own
#: builds carry DWARF and may hold either variant, so they only get the consistency checks.
KNOWN_RELEASES = {
    "6.1.0-50-amd64": "vulnerable",  # 6.1.176-1
    "6.1.0-56-amd64": "fixed",  # 6.1.192-2
    "6.12.107+deb12-amd64": "vulnerable",
    "6.12.117+deb12-amd64": "fixed",
}



def _modules_dir() -> list[Path]:
    """The modules of SMCPATCH_TEST_MODULES_DIR, when a user points the test at their own."""
    root = os.environ.get("SMCPATCH_TEST_MODULES_DIR")
    found: list[Path] = []
    for pattern in ("smc.ko", "smc.ko.xz", "smc.ko.zst", "smc.ko.gz"):
        found.extend(Path(root).rglob(pattern) if root else [])
    return sorted(found)


@pytest.mark.parametrize("version", ["6.1.176", "6.1.192", "6.12.107", "6.12.117"])
def test_real_modules_of_the_matrix(version: str) -> None:
    """Debian's shipped module and our before/after builds of each default kernel: the test
    makes what it needs (fetch and build into the test cache), so a fresh machine runs it."""
    from smcpatch.pipeline.prepare import verify_target
    from tests.conftest import cache_root_for_tests, real_workspace

    ws = real_workspace(version)
    report = verify_target(Cache.open(cache_root_for_tests()), ws.target, workspace=ws)
    assert ws.shipped_module is not None and report.before and report.after
    for module in (ws.shipped_module, Path(report.before.path), Path(report.after.path)):
        check_real_module(module)


@pytest.mark.parametrize("module", _modules_dir() or [
    pytest.param(None, marks=pytest.mark.skip(reason="SMCPATCH_TEST_MODULES_DIR is not set"))],
    ids=str)
def test_modules_of_a_directory(module: Path) -> None:
    check_real_module(module)


def check_real_module(module: Path) -> None:
    t0 = time.perf_counter()
    info: ModuleInfo = inspect_module(module)
    elapsed = time.perf_counter() - t0
    ev = info.evidence
    assert info.name == "smc"
    assert info.vermagic
    assert ev.verdict in ("fixed", "vulnerable"), ev.reasons
    assert (ev.verdict == "vulnerable") == bool(ev.dst_ref_sites)
    release = info.vermagic.split(" ", 1)[0]
    assert check_vermagic(info, release)[0]
    if info.stripped and release in KNOWN_RELEASES:
        assert ev.verdict == KNOWN_RELEASES[release]
    if info.stripped:
        assert elapsed < 1.0, f"inspect took {elapsed:.2f}s"
