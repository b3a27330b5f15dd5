"""Strings from outside stay text (outputs.text): on a terminal, in JUnit XML, in a printed
command. Random strings (control characters, `[`/`]` and markup-like tags, newlines, lone
surrogates as non-UTF-8 bytes arrive) go through every renderer; each example the issue named
is a regression test, most through the real command line on a crafted module or matrix."""

from __future__ import annotations

import copy
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from junitparser import JUnitXml
from rich.console import Console

from smcpatch.commands import kernels as kernels_cmd
from smcpatch.errors import BadInput
from smcpatch.installed.modprobe import Block
from smcpatch.outputs import junit, terminal
from smcpatch.outputs.terminal import fmt
from smcpatch.outputs.text import shell_word, visible, xml_safe
from tests import elfobjs
from tests.installed.machine import FakeAdvisor, Machine, running
from tests.outputs.test_vex_junit import _row, _target_report

ROOT = Path(__file__).resolve().parents[1]
FORGED = "smc.ko: fixed"
SPECIALS = ["[/]", "[link=http://x]", "[bold]", "[/bold]", "[red", "]", "\\", "\\[/]", "\n",
            "\r", "\t", "\x00", "\x07", "\x1b", "\x1b[31m", "\x1b]0;title\x07", "\x7f", "\x85",
            "\x9b", "\u202e", "\u2066", "\u2028", "\ufeff", "\udc80", "\udcff", "\ud800",
            "{}", "{0}", "%s", f"\n{FORGED}", ":smile:", "\ue000", "é", "€"]
HOSTILE = st.lists(st.one_of(st.sampled_from(SPECIALS),
                             st.text(st.characters(exclude_categories=()), max_size=4)),
                   max_size=8).map("".join)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def rendered(draw: Any, width: int = 80) -> str:
    """What a renderer writes to a terminal-less console (no styles: only the text)."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    draw(console)
    return out.getvalue()


def assert_text_only(output: str) -> None:
    """No raw control character: only the layout's own newlines."""
    bad = [ch for ch in output if ch != "\n" and not ch.isprintable()]
    assert not bad, (bad, output)


# -- the sanitiser itself ------------------------------------------------------------------------
@SETTINGS
@given(value=HOSTILE)
def test_visible_is_one_printable_line(value: str) -> None:
    shown = visible(value)
    assert shown.isprintable()
    assert (shown == value) == value.isprintable()  # changed only when needed
    shown.encode("utf-8")  # a lone surrogate is gone


@SETTINGS
@given(value=HOSTILE)
def test_fmt_never_reads_a_value_as_markup(value: str) -> None:
    text = fmt("[bold]{}[/] and [red]{}[/]: {:>3}", value, value, 7)
    assert text.plain == f"{visible(value)} and {visible(value)}:   7"


@SETTINGS
@given(value=HOSTILE)
def test_shell_word_round_trips(value: str) -> None:
    assert shlex.split("cmd " + shell_word(value)) == ["cmd", value]


# -- every renderer, random strings ---------------------------------------------------------------
def _inspect_data(v: str) -> dict[str, Any]:
    site = {"target": v, "fragment": v, "offset": 13}
    return {"module": v, "verdict": "fixed", "vermagic": v, "has_dwarf": True,
            "signature_text": v, "reasons": [v, "ours"],
            "evidence": {"fragments": {v: 101}, "rcu_read_lock_sites": [site],
                         "rcu_read_unlock_sites": [], "dst_reference_sites": [site],
                         "call_targets": [v, "__rcu_read_lock"], "dwarf_inlined": [v]},
            "vermagic_ok": False}


@SETTINGS
@given(value=HOSTILE)
def test_inspect_text(value: str) -> None:
    output = rendered(lambda c: terminal.print_inspect(_inspect_data(value), c), width=100_000)
    assert_text_only(output)
    assert f"  vermagic: {visible(value)}   DWARF: yes\n" in output
    assert f"\n{FORGED}" not in output.replace(f"\\n{FORGED}", "")


def _reports(v: str) -> list[Any]:
    first = _target_report(package_version=v, notes=[v, "shared"], problems=[v])
    second = _target_report(vermagic_ok=False, notes=["shared"], error=v, error_detail=v)
    first.flavour = v
    return [first, second]


@pytest.mark.parametrize("width", [40, 300])
@SETTINGS  # per-target blocks, and the table
@given(value=HOSTILE)
def test_verify_and_report_tables_and_blocks(width: int, value: str) -> None:
    output = rendered(lambda c: terminal.print_summary(_reports(value), c), width=width)
    assert_text_only(output)
    assert "CVE-2025-40168" in output and "our fix" in output


@SETTINGS
@given(value=HOSTILE)
def test_progress_lines(value: str) -> None:
    def draw(console: Console) -> None:
        with terminal.progress_display(console) as display:
            display.reporter(value)(value)
            display.say(value)
            display.done(value, _reports(value)[1])
        assert fmt("{}", value).plain in terminal._Described().render(
            SimpleNamespace(fields={"label": value, "message": "x"})).plain  # type: ignore

    output = rendered(draw)
    assert_text_only(output)
    assert "FAIL" in output


@pytest.mark.parametrize("width", [40, 300])
@SETTINGS
@given(value=HOSTILE)
def test_scan_summary(width: int, value: str) -> None:
    rows = [_row("vulnerable", package=value, version=value, evidence=value),
            _row("fixed", "agree", changelog_fixed_in=value, suite=value),
            _row("unknown", error=value)]
    scan = SimpleNamespace(rows=rows, suites=(value,), seconds=1.0, downloaded_bytes=0)
    output = rendered(lambda c: terminal.print_scan(scan, c), width=width)
    assert_text_only(output)


@SETTINGS
@given(value=HOSTILE)
def test_race_and_dkms(value: str) -> None:
    run = SimpleNamespace(variant=value, instrumented=True, attempts=3, prfx_match_calls=2,
                          returns={"-19": 1}, splats=[value], reports=[
                              {"count": 1, "title": value, "scope": value}],
                          reproduced=True, outcome=value, error=value, verdict=value,
                          finding=value)
    race = SimpleNamespace(runs=[run], debug_kernel={
        "title": value, "sanitizer": value, "from_cache": True, "kernel_make_args": [value],
        "module_make_args": [value], "run_params": {value: value}}, release=value,
        kernel=value, cmdline=value, widening={value: value}, canary_caught=False,
        fixed_survived=False)
    summary = {"fixed_sources": True, "name": value, "version": value, "release_regex": value,
               "package": value, "fixes": [{"id": value, "state": value, "patch": value}],
               "check": {"dkms": value, "seconds": 1, "release": value, "verdict": value,
                         "vermagic_ok": True, "modversions_ok": False,
                         "changed_vs_shipped": [value], "signature_text": value}}
    output = rendered(lambda c: (terminal.print_race(race, c), terminal.print_dkms(summary, c)),
                      width=100_000)
    assert_text_only(output)
    build = next(line for line in output.splitlines() if line.startswith("  build: cd "))
    words = build.removeprefix("  build: ").split(" && ")[0]
    if value.isprintable():  # the hint a user copies: the directory one word
        assert shlex.split(words) == ["cd", value]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`host` on a fake machine once, with a fixed crafted smc.ko (judged, nothing fetched)."""
    from smcpatch.commands.host import HostRequest, run

    where = tmp_path_factory.mktemp("host")
    module = crafted_module(where, b"6.1.0-50-amd64 SMP preempt mod_unload modversions ")
    machine = Machine.make(where)
    release = "6.1.0-50-amd64"
    machine.file(f"/lib/modules/{release}/kernel/net/smc/smc.ko", module.read_bytes())
    machine.package(f"linux-image-{release}", "6.1.176-1",
                    [f"/lib/modules/{release}/kernel/net/smc/smc.ko"])
    return run(HostRequest(root=machine.root), runtime=running(release), advisor=FakeAdvisor())


@pytest.mark.parametrize("width", [40, 300])
@SETTINGS
@given(value=HOSTILE)
def test_host_output(crafted: Any, width: int, value: str) -> None:
    result = copy.deepcopy(crafted)
    result.root, result.notes, result.summary = value, [value], value
    state = result.kernels[0]
    state.kernel.release, state.kernel.package, state.kernel.version = value, value, value
    state.notes = [value]
    state.verdict, state.blocks = "vulnerable", [Block(value, value)]
    output = rendered(lambda c: terminal.print_host(result, c), width=width)
    assert_text_only(output)
    state.loadable = True
    assert_text_only(rendered(lambda c: terminal.print_host(result, c), width=width))


@SETTINGS
@given(kernel=HOSTILE, flavour=HOSTILE)
def test_matrix_lines_are_shell_words(kernel: str, flavour: str) -> None:
    job = {"kernel": kernel, "arch": "amd64", "flavour": flavour}
    try:
        line = kernels_cmd._job_line(job)
    except BadInput as exc:
        assert not (kernel.isprintable() and flavour.isprintable())
        assert visible(str(exc)).isprintable()
        return
    assert line.isprintable()
    assert shlex.split(line) == ["smcpatch", "verify", "--kernel", kernel, "--arch", "amd64",
                                 "--flavour", flavour, "--json",
                                 f"report-{kernel}-{flavour}.json"]


@SETTINGS
@given(value=HOSTILE)
def test_junit_is_well_formed(tmp_path: Path, value: str) -> None:
    path = tmp_path / "j.xml"
    reports = _reports(value)
    junit.write(path, junit.verify_suite(reports, fail_on_vulnerable=True),
                junit.scan_suite([_row("vulnerable", package=value, evidence=value),
                                  _row("unknown", version=value, error=value)]))
    ElementTree.parse(path)  # raises on anything not well-formed
    assert len(list(JUnitXml.fromfile(str(path)))) == 2
    assert xml_safe(visible(value)) == visible(value)


# -- the named examples, as a user meets them ----------------------------------------------------
def crafted_module(where: Path, vermagic: bytes, name: str = "smc.ko") -> Path:
    """A fixed smc.ko-like object whose .modinfo vermagic holds these bytes, any of them."""
    literal = "".join(f"\\{b:03o}" for b in b"vermagic=" + vermagic)
    source = elfobjs.SMC_CLC_C.replace(
        '"vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions "', f'"{literal}"')
    assert source != elfobjs.SMC_CLC_C
    return elfobjs.compile_c(where, source, name, defines=("FIXED", "MODINFO"))


def smcpatch(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "COLUMNS": "200", **env}
    environ.pop("SMCPATCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "smcpatch", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, errors="surrogateescape",
                          timeout=300, check=False)


def assert_no_raw(proc: subprocess.CompletedProcess[str]) -> None:
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert_text_only(proc.stdout + proc.stderr)


def assert_only_prfx_match_fixed(proc: subprocess.CompletedProcess[str]) -> None:
    """The crafted smc.ko holds smc_clc.c alone: CVE-2025-40168 fixed, the fixes whose
    functions live in smc's other files undecided (the worst decides: exit 2)."""
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"CVE-2025-40168 +fixed +smc_clc_prfx_match", proc.stdout), proc.stdout
    assert re.search(r"0b0e4d51c655 +undecided", proc.stdout), proc.stdout


def test_markup_in_a_path_and_a_vermagic(tmp_path: Path) -> None:
    where = tmp_path / "a[/]b"  # a `[/]` in the path: the directories `a[` and `]b`
    where.mkdir(parents=True)
    module = crafted_module(where, b"6.1.0 [link=http://x]here[/link] \x1b[31m\x07red")
    proc = smcpatch("inspect", "--module", str(module))
    assert_only_prfx_match_fixed(proc)
    assert_no_raw(proc)
    assert f"{where}/smc.ko" in proc.stdout
    assert "vermagic: 6.1.0 [link=http://x]here[/link] \\x1b[31m\\x07red" in proc.stdout
    missing = smcpatch("inspect", "--module", str(where / "[/]nothing[link=x].ko"))
    assert missing.returncode == 2 and "[/]nothing[link=x].ko" in missing.stderr
    assert_no_raw(missing)


def test_a_newline_in_a_vermagic_forges_no_line(tmp_path: Path) -> None:
    module = crafted_module(tmp_path, b"6.1.0\nsmc.ko: fixed\r\nsmc.ko: fixed")
    proc = smcpatch("inspect", "--module", str(module), "--release", "6.1.0-50-amd64")
    assert_no_raw(proc)
    assert not any(line.startswith(FORGED) for line in proc.stdout.splitlines())
    assert "6.1.0\\nsmc.ko: fixed\\r\\nsmc.ko: fixed" in proc.stdout


def test_a_non_ascii_vermagic_under_an_ascii_terminal(tmp_path: Path) -> None:
    module = crafted_module(tmp_path, "6.1.0 é€ \u202e".encode())
    proc = smcpatch("inspect", "--module", str(module), PYTHONIOENCODING="ascii")
    assert_only_prfx_match_fixed(proc)
    assert_no_raw(proc)
    assert "6.1.0 \\xe9\\u20ac \\u202e" in proc.stdout


def test_esc_and_bel_in_a_root_directory_and_a_dpkg_version(tmp_path: Path) -> None:
    """`host --root` where the root's name, a kernel release (a directory) and dpkg's Version
    hold ESC/BEL/newlines: all shown as escapes, the exit code what the machine says."""
    machine = Machine.make(tmp_path / "r\x1b]0;owned\x07\x1b[2J")
    release = "6.1.0-50-amd64\x1b[31m"
    module = crafted_module(tmp_path, b"6.1.0-50-amd64 SMP preempt mod_unload modversions ")
    machine.file(f"/lib/modules/{release}/kernel/net/smc/smc.ko", module.read_bytes())
    machine.package(f"linux-image-{release}", "6.1.176-1\x1b[1A\x07[/]",
                    [f"/lib/modules/{release}/kernel/net/smc/smc.ko"])
    proc = smcpatch("host", "--root", str(machine.root))
    assert proc.returncode == 0, proc.stderr  # a fixed module: not exposed
    assert_no_raw(proc)
    assert "r\\x1b]0;owned\\x07\\x1b[2J" in proc.stdout
    assert "6.1.176-1\\x1b[1A\\x07[/]" in proc.stdout


def test_a_crafted_matrix(tmp_path: Path) -> None:
    """`6.1.176; touch PWNED #` never unquoted; control characters in a package_version
    neither on the terminal nor in JUnit."""
    matrix = tmp_path / "kernels.toml"
    matrix.write_text('[[kernel]]\nversion = "6.1.176; touch PWNED #"\n'
                      'package_version = "6.1.176-1\\u001b[31m\\u0007[/]\\u0000"\n'
                      'series = "6.1"\nabi = "6.1.0-50"\nsuite = "bookworm"\n'
                      'flavour = "amd64"\n')
    lines = smcpatch("matrix", "--matrix", str(matrix))
    assert lines.returncode == 0, lines.stderr
    assert_no_raw(lines)
    [line] = lines.stdout.splitlines()
    assert "'6.1.176; touch PWNED #'" in line
    assert shlex.split(line)[3] == "6.1.176; touch PWNED #"
    listed = smcpatch("kernels", "--matrix", str(matrix))
    assert listed.returncode == 0, listed.stderr
    assert_no_raw(listed)
    assert "6.1.176-1\\x1b[31m\\x07[/]\\x00" in listed.stdout
    report = _target_report(package_version="6.1.176-1\x1b[31m\x07[/]\x00\ufffe",
                            error="failed \x00\x1b")
    path = tmp_path / "j.xml"
    junit.write(path, junit.verify_suite([report]))
    ElementTree.parse(path)
    assert "\\x1b" in path.read_text()


def test_a_matrix_version_with_a_newline_is_refused(tmp_path: Path) -> None:
    matrix = tmp_path / "kernels.toml"
    matrix.write_text('[[kernel]]\nversion = "6.1.176\\ninv evil"\npackage_version = "6.1.176-1"\n'
                      'series = "6.1"\nabi = "6.1.0-50"\n')
    proc = smcpatch("matrix", "--matrix", str(matrix))
    assert proc.returncode == 2 and "6.1.176\\ninv evil" in proc.stderr
    assert_no_raw(proc)
    assert not proc.stdout
