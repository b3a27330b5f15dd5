"""installed.modprobe against kmod itself: for generated modprobe.d layouts, what smcpatch says
kmod does to smc equals what kmod's dry run does (`modprobe -n -v -d ROOT -S RELEASE smc` and
`... net-pf-43`), run in a private mount namespace with the layout's directories bind-mounted over
/etc/modprobe.d, /run/modprobe.d, /usr/local/lib/modprobe.d and /lib/modprobe.d (the host's own
files are never written; -n: nothing is loaded).

The fake kernel: smc.ko (alias net-pf-43, exports a symbol), smc_diag.ko (uses it: depends on
smc), ib_core.ko and other.ko, small ELF objects compiled here, indexed by depmod -b. Every layout
also holds /run/modprobe.d/zzzz-smcpatch-marker.conf (`options smc __smcpatch_marker=1`): kmod
prints a module's options after its action, so the marker finds smc's own line in the output.

Compared per request: everything the dry run prints, byte for byte and in order (`insmod PATH
OPTIONS`, `install COMMAND OPTIONS` for smc and every module on the way), and the loadable
answer. kmod's dry run prints an install command
instead of running it; what the command does is taken from the generator's table of commands
(anything else, e.g. a command with a CR kmod kept, is one smcpatch cannot read: loadable).
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smcpatch.installed.modprobe import (
    FILE_LIMIT,
    MODULE,
    Action,
    KernelIndex,
    decide,
    loads,
    raw,
    read_config,
)
from smcpatch.installed.root import Root
from smcpatch.plumbing import proc
from tests.elfobjs import require_gcc, require_tool

RELEASE = "6.1.0-99-kmodtest"
MARKER = "__smcpatch_marker=1"
SEED = 40168
LAYOUTS = 300
MOUNTED = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "usr/lib/modprobe.d")

MODULES = {
    "net/smc/smc": ('alias=net-pf-43\\0name=smc\\0', "int smc_export_fn(void) { return 1; }\n"
                    '__attribute__((section("__ksymtab_strings"), used)) '
                    'static const char ks[] = "smc_export_fn";\n'),
    "net/smc/smc_diag": ("name=smc_diag\\0", "extern int smc_export_fn(void);\n"
                         "int smc_diag_f(void) { return smc_export_fn(); }\n"),
    "drivers/ib_core": ("name=ib_core\\0", ""),
    "drivers/other": ("name=other\\0", ""),
}

# install commands and what they do when run (kmod's dry run only prints them)
COMMANDS = {"/bin/false": False, "/bin/true": False, "exit 1": False,
            "/sbin/modprobe --ignore-install smc": True,
            "/sbin/modprobe --ignore-install smc $CMDLINE_OPTS": True,
            "/usr/local/sbin/smc-policy": True}  # a script: counted as loading smc
NAMES = ["smc", "smc", "smc", "SMC", "sm?", "sm*", "s[m]c", "s[!x]c", "smc_diag", "smc-diag",
         "ib_core", "net-pf-43", "net_pf_43", "net-pf-*", "nosuch", "s]c", "s[mc"]
TARGETS = ["smc", "off", "ib_core", "smc_diag", "nosuch", "other"]
SOFTDEPS = ["pre: ib_core", "post: other", "pre: nosuch", "pre:ib_core", "pre: nosuch post: off",
            "post: ib_core nosuch", "pre: smc_diag"]
SEPARATORS = [" "] * 12 + ["\t", "  ", " \t", "\v", "\f", "\u00a0", "\r"]
FILE_NAMES = ["smc.conf", "50-smc.conf", "a.conf", "z.conf", "smc.alias", "x.alias",
              "readme.txt", "smc.conf.bak", ".hidden.conf", "conf", "s.conf", "Smc.conf",
              "x.CONF", ".conf", "zz.conf"]
DIRS = ["etc/modprobe.d", "etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d",
        "usr/lib/modprobe.d", "usr/lib/modprobe.d"]


# -- the fake kernel and kmod ---------------------------------------------------------------------
@dataclass(frozen=True)
class Kmod:
    modules: Path  # the kernel's modules directory, copied into every layout
    empty: Path  # an empty directory, mounted where a layout has none


@pytest.fixture(scope="module")
def kmod(tmp_path_factory: pytest.TempPathFactory) -> Kmod:
    if os.geteuid() != 0:
        pytest.skip("kmod's dry run over a fake root needs root (a private mount namespace)")
    for command in ("modprobe", "depmod"):
        require_tool(command, "kmod")
    require_tool("unshare", "util-linux")
    require_tool("mount", "mount")  # the bind mounts (a fresh machine has no mount package)
    gcc = require_gcc()
    if Path("/sys/module/smc").exists():
        pytest.skip("smc is loaded on this host: kmod's dry run would print nothing for it")
    cmdline = Path("/proc/cmdline").read_text()
    if "smc" in cmdline or "modprobe." in cmdline or "net_pf" in cmdline:
        pytest.skip("the host's command line speaks of smc or modprobe: kmod reads it too")
    for target in ("/etc/modprobe.d", "/usr/lib/modprobe.d", "/usr/local/lib", "/run"):
        if not Path(target).is_dir():
            pytest.skip(f"{target} is not a directory on this host: nothing to mount over")
    if Path("/lib/modprobe.d").resolve() != Path("/usr/lib/modprobe.d"):
        pytest.skip("/lib is not /usr/lib on this host (not merged-/usr): /lib/modprobe.d and "
                    "/usr/lib/modprobe.d would need two mounts")
    probe = proc.run(["unshare", "-m", "--propagation", "private", "true"],
                     timeout=60, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not possible here: {probe.stderr.strip()}")
    base = tmp_path_factory.mktemp("kmod")
    modules = base / "modules" / RELEASE
    for path, (modinfo, body) in MODULES.items():
        source = base / (path.replace("/", "_") + ".c")
        source.write_text('__attribute__((section(".modinfo"), used)) static const char mi[] = '
                          f'"{modinfo}license=GPL\\0vermagic={RELEASE} SMP mod_unload\\0";\n'
                          + body)
        out = modules / "kernel" / f"{path}.ko"
        out.parent.mkdir(parents=True, exist_ok=True)
        proc.run([gcc, "-c", "-o", str(out), str(source)], timeout=120, check=True)
    fake = base / "depmod-root"
    (fake / "lib/modules").mkdir(parents=True)
    (fake / "lib/modules" / RELEASE).symlink_to(modules)
    proc.run(["depmod", "-b", str(fake), RELEASE], timeout=120, check=True, capture_output=True)
    assert "smc_diag.ko: kernel/net/smc/smc.ko" in (modules / "modules.dep").read_text()
    (base / "empty").mkdir()
    return Kmod(modules, base / "empty")


def make_root(kmod: Kmod, where: Path, files: dict[str, bytes | str]) -> Path:
    """A machine root: merged /usr (lib -> usr/lib), the fake kernel, the marker, FILES."""
    (where / "usr/lib/modules").mkdir(parents=True)
    (where / "lib").symlink_to("usr/lib")
    shutil.copytree(kmod.modules, where / "usr/lib/modules" / RELEASE)
    files = {"run/modprobe.d/zzzz-smcpatch-marker.conf": f"options smc {MARKER}\n", **files}
    for path, content in files.items():
        target = where / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if content == "@dir":
            target.mkdir(exist_ok=True)
        elif content == "@null":
            target.symlink_to("/dev/null")
        else:
            target.write_bytes(content if isinstance(content, bytes) else raw(content))
    return where


def dry_runs(kmod: Kmod, roots: list[Path]) -> list[dict[str, list[bytes]]]:
    """kmod's dry run of `modprobe smc` and `modprobe net-pf-43` in each root: what it prints."""
    script = ["set -e", "mount -t tmpfs smcpatch-test /run", "mkdir /run/modprobe.d",
              "mount -t tmpfs smcpatch-test /usr/local/lib", "mkdir /usr/local/lib/modprobe.d"]
    for root in roots:
        for directory in MOUNTED:
            source = root / directory if (root / directory).is_dir() else kmod.empty
            script.append(f"mount --bind {shlex.quote(str(source))} /{directory}")
        for request in ("smc", "net-pf-43"):
            out = shlex.quote(str(root / f"kmod.{request}"))
            script.append(f"modprobe -n -v -d {shlex.quote(str(root))} -S {RELEASE} {request} "
                          f">{out} 2>{out}.err || true")
        script += [f"umount /{directory}" for directory in MOUNTED]
    script_file = roots[0].parent / f"kmod-{roots[0].name}.sh"
    script_file.write_text("\n".join(script) + "\n")
    done = proc.run(["unshare", "-m", "--propagation", "private", "sh", str(script_file)],
                    timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [{request: [line for line in (root / f"kmod.{request}").read_bytes().split(b"\n")
                       if line] for request in ("smc", "net-pf-43")}
            for root in roots]


# -- smcpatch's answer, and how it is compared --------------------------------------------------
def smc_lines(lines: list[bytes]) -> list[bytes]:
    """smc's own action lines, for the counts: its smc.ko inserted, or an install command with
    smc's options (the marker; a module found through an alias named smc gets them too)."""
    return sorted({line for line in lines
                   if (line.startswith(b"insmod ") and line.split(b" ")[1].endswith(b"/smc.ko"))
                   or (line.startswith(b"install ") and raw(MARKER) in line)})


def kmod_loads(lines: list[bytes]) -> bool:
    """Whether smc ends up loaded when kmod does what its dry run printed: smc.ko inserted, or
    an install command (smc's, or another module's on the way) that loads it."""
    for line in lines:
        if line.startswith(b"insmod ") and line.split(b" ")[1].endswith(b"/smc.ko"):
            return True
        if line.startswith(b"install ") and command_loads(line[len(b"install "):]):
            return True
    return False


def command_loads(printed: bytes) -> bool:
    """What a printed `install` command does: the generator's commands by their text, the
    options kmod appended (the generator's own) dropped; anything else is unreadable: loads."""
    text = printed.decode("utf-8", "surrogateescape")
    words = text.split(" ")
    while words and (words[-1] in ("", "a=1", "b=2", "c=3", MARKER)):
        words.pop()
    text = " ".join(words)
    text = re.sub(r" # tag[0-9]+$", "", text).lstrip(" \t")
    if not text.strip(" \t"):
        return False  # an empty command runs nothing
    return COMMANDS.get(text, True)


@dataclass
class Outcome:
    agree_line: bool
    agree_answer: bool
    detail: str


def printed(root: Path, action: Action) -> list[bytes]:
    """What smcpatch says `modprobe -n -v` prints, module paths as kmod names them under -d."""
    return [raw(line.replace("insmod /lib/modules/", f"insmod {root}/lib/modules/", 1))
            for line in action.printed]


def compare(root: Path, lines: dict[str, list[bytes]]) -> Outcome:
    machine = Root.at(root)
    config = read_config(machine, RELEASE)
    decision = decide(config, (), KernelIndex.read(machine, RELEASE))
    problems = []
    agree_answer = agree_line = True
    for request, action in (("smc", decision.by_name), ("net-pf-43", decision.by_alias)):
        want = printed(root, action)
        if lines[request] != want:
            agree_line = False
            problems.append(f"{request}: kmod printed {lines[request]}, smcpatch says {want}")
        answer = loads(action) if request == "smc" else decision.autoloads
        if answer != kmod_loads(lines[request]):
            agree_answer = False
            problems.append(f"{request}: kmod loads={kmod_loads(lines[request])}, smcpatch "
                            f"{answer} ({action})")
    if not decision.loadable and (kmod_loads(lines["smc"]) or kmod_loads(lines["net-pf-43"])):
        agree_answer = False
        problems.append("smcpatch says every load blocked, kmod loads smc")
    return Outcome(agree_line, agree_answer, "; ".join(problems))


# -- the generator ---------------------------------------------------------------------------------
def directive(rng: random.Random) -> str:
    def sep() -> str:
        return rng.choice(SEPARATORS)

    kind = rng.choice(["install"] * 5 + ["blacklist"] * 3 + ["alias"] * 3 + ["softdep"] * 2
                      + ["options"] * 2 + ["remove", "include", "bogus", "comment", "blank"])
    name = rng.choice(NAMES)
    if kind == "install":
        command = rng.choice([*COMMANDS, ""])
        if rng.random() < 0.2:
            command += f" # tag{rng.randrange(100)}"
        return f"install{sep()}{name}{sep()}{command}"
    if kind == "blacklist":
        return f"blacklist{sep()}{name}" + (f"{sep()}extra" if rng.random() < 0.1 else "")
    if kind == "alias":
        target = rng.choice(TARGETS) if rng.random() < 0.95 else ""
        return f"alias{sep()}{name}{sep()}{target}"
    if kind == "softdep":
        return f"softdep{sep()}{name}{sep()}{rng.choice(SOFTDEPS)}"
    if kind == "options":
        return f"options{sep()}{name}{sep()}{rng.choice(['a=1', 'b=2  c=3', ''])}"
    if kind == "remove":
        return f"remove{sep()}{name}{sep()}/bin/true"
    if kind == "include":
        return f"include /etc/{name}.conf"
    if kind == "comment":
        return rng.choice(["# install smc /bin/false", "  # blacklist smc", "#"])
    return rng.choice(["", "   ", "bogus smc"])


def file_text(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 6)):
        line = directive(rng)
        if rng.random() < 0.15 and " " in line:  # continued onto the next line
            cut = line.index(" ")
            line = line[:cut] + rng.choice([" \\\n", "\\\n", " \\\r\n"]) + line[cut + 1:]
        if rng.random() < 0.05:
            line = "# note \\\n" + line  # a continued comment swallows the line
        if rng.random() < 0.1:
            line = rng.choice([" ", "\t"]) + line
        lines.append(line)
    eol = "\r\n" if rng.random() < 0.15 else "\n"
    text = eol.join(lines) + (eol if rng.random() < 0.8 else "")
    if rng.random() < 0.03:
        text += "\\"  # a backslash at the end of the file
    data = raw(text)
    if rng.random() < 0.02:  # large: the directive after 4 MiB of comments
        data = b"# padding padding padding padding padding padding padding\n" * 75000 + data
    return data


def layout(rng: random.Random) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {}
    for _ in range(rng.randrange(1, 6)):
        path = f"{rng.choice(DIRS)}/{rng.choice(FILE_NAMES)}"
        roll = rng.random()
        files[path] = "@null" if roll < 0.04 else "@dir" if roll < 0.07 else file_text(rng)
    if rng.random() < 0.2:  # the /etc-over-/usr/lib override of one name
        name = rng.choice(FILE_NAMES[:4])
        files[f"usr/lib/modprobe.d/{name}"] = "install smc /bin/false\n"
        files[f"etc/modprobe.d/{name}"] = rng.choice(["", "@null", "blacklist smc\n",
                                                      "install smc /bin/true\n"])
    return files


def generated() -> Iterator[dict[str, bytes | str]]:
    rng = random.Random(SEED)
    for _ in range(LAYOUTS):
        yield layout(rng)


# the issue's own examples, and a few more, each kmod's answer checked as above
FIXED: dict[str, dict[str, bytes | str]] = {
    "vt": {"etc/modprobe.d/x.conf": "install\vsmc /bin/false\n"},
    "nbsp": {"etc/modprobe.d/x.conf": "install\u00a0smc /bin/false\n"},
    "bare install": {"etc/modprobe.d/x.conf": "install smc\n"},
    "bare install, trailing space": {"etc/modprobe.d/x.conf": "install smc \n"},
    "block after 4 MiB": {"etc/modprobe.d/big.conf":
                          b"\n".join([b"# comment " * 8] * 60000)
                          + b"\ninstall smc /bin/false\n"},
    "two files, first wins": {"etc/modprobe.d/a.conf": "install smc /sbin/modprobe "
                                                       "--ignore-install smc\n",
                              "usr/lib/modprobe.d/b.conf": "install smc /bin/false\n"},
    "two files, false first": {"usr/lib/modprobe.d/a.conf": "install smc /bin/false\n",
                               "etc/modprobe.d/b.conf": "install smc /bin/true\n"},
    "etc overrides usr/lib": {"usr/lib/modprobe.d/s.conf": "install smc /bin/false\n",
                              "etc/modprobe.d/s.conf": "blacklist smc\n"},
    "softdep resolves": {"etc/modprobe.d/x.conf": "install smc /bin/false\n"
                                                  "softdep smc pre: ib_core\n"},
    "softdep does not resolve": {"etc/modprobe.d/x.conf": "install smc /bin/false\n"
                                                          "softdep smc pre: nosuch\n"},
    "alias smc off": {"etc/modprobe.d/x.conf": "alias smc off\n"},
    "blacklist": {"etc/modprobe.d/x.conf": "blacklist smc\n"},
    "crlf blacklist": {"etc/modprobe.d/x.conf": "blacklist smc\r\n"},
    "continued comment": {"etc/modprobe.d/x.conf": "# c \\\ninstall smc /bin/false\n"},
    "case": {"etc/modprobe.d/x.conf": "install SMC /bin/false\n"},
}


@pytest.mark.parametrize("name", list(FIXED))
def test_the_named_examples_get_kmods_answer(kmod: Kmod, tmp_path: Path, name: str) -> None:
    root = make_root(kmod, tmp_path / "root", FIXED[name])
    [lines] = dry_runs(kmod, [root])
    outcome = compare(root, lines)
    assert outcome.agree_line and outcome.agree_answer, outcome.detail


def test_the_issue_examples_load_where_kmod_loads(kmod: Kmod, tmp_path: Path) -> None:
    """What kmod does, said outright for the issue's examples (not only 'the same as kmod')."""
    for name, loaded in (("vt", True), ("nbsp", True), ("bare install", True),
                         ("block after 4 MiB", False), ("two files, first wins", True),
                         ("two files, false first", False)):
        machine = Root.at(make_root(kmod, tmp_path / name.replace(" ", "_"), FIXED[name]))
        decision = decide(read_config(machine, RELEASE), (), KernelIndex.read(machine, RELEASE))
        assert decision.loadable is loaded, name


def test_a_file_larger_than_the_limit_is_refused(kmod: Kmod, tmp_path: Path) -> None:
    from smcpatch.errors import BadInput
    root = make_root(kmod, tmp_path / "root", {})
    big = root / "etc/modprobe.d/big.conf"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as handle:
        handle.truncate(FILE_LIMIT + 1)
    with pytest.raises(BadInput, match="big.conf"):
        read_config(Root.at(root))


def test_generated_layouts_agree_with_kmod(kmod: Kmod, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    roots = [make_root(kmod, tmp_path / f"l{i:03}", files) for i, files in enumerate(generated())]
    results = dry_runs(kmod, roots)
    outcomes = [compare(root, lines) for root, lines in zip(roots, results, strict=True)]
    lines_agree = sum(o.agree_line for o in outcomes)
    answers_agree = sum(o.agree_answer for o in outcomes)
    reached = sum(bool(smc_lines(r["smc"])) for r in results)
    installs = sum(any(line.startswith(b"install") for line in smc_lines(r["smc"]))
                   for r in results)
    with capsys.disabled():
        print(f"\nkmod differential: {len(roots)} layouts, smc's action line agrees in "
              f"{lines_agree}, loadable answer in {answers_agree} (kmod reached smc by name "
              f"in {reached}, through an install command in {installs})")
    bad = [f"{root.name}: {o.detail}" for root, o in zip(roots, outcomes, strict=True)
           if not (o.agree_line and o.agree_answer)]
    assert not bad, "\n".join(bad[:10])
    # the generator reaches every branch that matters
    assert installs > 20 and reached < len(roots) and reached > len(roots) // 3
    for root in roots:
        shutil.rmtree(root)
    assert MODULE == "smc"
