"""kmod's configuration, read the way kmod reads it, and the one decision: can smc load?

Files (libkmod-config.c, modprobe.d(5)): the directories /etc/modprobe.d, /run/modprobe.d,
/usr/local/lib/modprobe.d, /usr/lib/modprobe.d and /lib/modprobe.d, in that order (kmod 30 in
bookworm has no /usr/lib; later kmods read it before /lib: reading it is harmless where it does
not exist or is /lib itself). Files are named `*.conf` (kmod also takes `*.alias`), not hidden, not
directories. A name seen in an earlier directory hides the same name in a later one (so a file in
/etc overrides, or with an empty file or a /dev/null link masks, one in /lib); then every file is
read in the byte order of its name, whatever its directory. A line ending in `\\` continues on the
next; a line starting with `#` is a comment; module names read `-` as `_`.

How kmod loads smc:

- `modprobe smc` (by name, also when another module depends on smc): the first `install`
  command whose pattern matches smc runs instead of inserting it, unless a `softdep` for smc
  names modules (kmod then ignores the install command: "softdep takes precedence"). `blacklist`
  does not apply to a load by name.
- `socket(AF_SMC)`: the kernel runs `modprobe net-pf-43`. kmod looks the alias up in the
  configuration's `alias` lines first (shell patterns); if any match, their modules are loaded
  instead of the kernel's own alias (`alias net-pf-43 off` loads a module named "off": none). Then
  an `install net-pf-43 ...` command of that exact name. Then the kernel's modules.alias, which
  names smc. A module found through an alias is refused when it is blacklisted (`blacklist smc`,
  or `modprobe.blacklist=smc` on the kernel command line).
- The kernel itself refuses every load of smc, insmod included, with `module_blacklist=smc` on
  its command line, and every load of anything once /proc/sys/kernel/modules_disabled is 1.

"Blocked" for smcpatch means every load blocked: an install command that does not load smc, the
kernel's module_blacklist, or modules_disabled. A blacklist (or an alias pointing net-pf-43
elsewhere) stops the socket's autoload only: `modprobe smc` still loads it, and so does a module
that depends on smc: smc_diag, whose own alias (the SMC_PNETID generic netlink family, which any
user may ask for) brings smc in as a dependency, where blacklists do not apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from ..plumbing.files import MB
from .root import Root

CONFIG_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
               "/usr/lib/modprobe.d", "/lib/modprobe.d")
SUFFIXES = (".conf", ".alias")
FILE_LIMIT = 4 * MB  # a modprobe.d file is a few lines: read no more
MODULE = "smc"
SOCKET_ALIAS = "net_pf_43"  # PF_SMC = 43; kmod normalizes the alias net-pf-43 to this
# an install command that runs modprobe or insmod on smc loads it: not a block
_LOADS = re.compile(r"\b(modprobe|insmod)\b")
_NAMES_SMC = re.compile(r"(^|[\s/'\"])smc(\.ko\S*)?($|[\s;&|'\"])")


@dataclass(frozen=True)
class Line:
    """One command of the configuration."""

    command: str  # alias, blacklist, install, remove, options, softdep, ...
    name: str  # its first word, a module name or pattern, `-` read as `_`
    rest: str  # what follows: an alias's module, an install command, softdep's lists
    source: str  # /etc/modprobe.d/x.conf:3

    @property
    def text(self) -> str:
        return f"{self.command} {self.name} {self.rest}".strip()


@dataclass(frozen=True)
class ModprobeConfig:
    files: tuple[str, ...]  # read, in kmod's order (machine paths)
    hidden: tuple[str, ...]  # not read: a file of the same name in an earlier directory
    lines: tuple[Line, ...]

    def of(self, command: str) -> list[Line]:
        return [line for line in self.lines if line.command == command]


@dataclass(frozen=True)
class Block:
    """What stops smc from loading, with where it was said."""

    text: str  # `install smc /bin/false`, `module_blacklist=smc` (kernel command line), ...
    source: str  # /etc/modprobe.d/x.conf:3, /proc/cmdline, /proc/sys/kernel/modules_disabled

    def __str__(self) -> str:
        return f"{self.text} ({self.source})"


@dataclass(frozen=True)
class Decision:
    """Whether smc can load: `every_load` stops `modprobe smc` too, `autoload` only the
    socket's net-pf-43 alias."""

    every_load: Block | None
    autoload: Block | None
    notes: tuple[str, ...] = field(default=())

    @property
    def loadable(self) -> bool:
        return self.every_load is None

    @property
    def autoloads(self) -> bool:
        return self.every_load is None and self.autoload is None


# -- reading -------------------------------------------------------------------------------------
def read_config(root: Root) -> ModprobeConfig:
    """Every configuration file kmod reads on the machine at ROOT, parsed."""
    chosen: dict[str, str] = {}
    hidden: dict[Path, str] = {}  # by the file itself: /lib and /usr/lib may be one directory
    for directory in CONFIG_DIRS:
        for name in _conf_names(root, directory):
            path = f"{directory}/{name}"
            if name not in chosen:
                chosen[name] = path
            elif root.resolve(chosen[name]) != root.resolve(path):
                hidden.setdefault(root.resolve(path), path)
    files = [chosen[name] for name in sorted(chosen, key=lambda n: n.encode())]
    lines: list[Line] = []
    for path in files:
        lines += parse(_read_text(root, path), path)
    return ModprobeConfig(tuple(files), tuple(hidden.values()), tuple(lines))


def _conf_names(root: Root, directory: str) -> list[str]:
    # absent, not a directory, unreadable: no names (kmod skips it too)
    return [name for name in root.listdir(directory)
            if not name.startswith(".") and name.endswith(SUFFIXES)
            and len(name) > 5 and root.kind(f"{directory}/{name}") != "dir"]


def _read_text(root: Root, path: str) -> str:
    """A configuration file's text, read inside ROOT (installed.root); unreadable or not a
    regular file (a /dev/null mask): none; larger than FILE_LIMIT: refused."""
    data = root.read(path, FILE_LIMIT, "a modprobe.d file")
    return "" if data is None else data.decode("utf-8", "replace")


def parse(text: str, path: str) -> list[Line]:
    """kmod's reading of one file: continuation lines joined, comments and blank lines skipped,
    the command and its module name split off (`-` read as `_` in the name)."""
    out: list[Line] = []
    for number, line in _logical_lines(text):
        if not line or line.startswith("#"):
            continue
        words = line.split(None, 2)
        if len(words) < 2 or words[0].startswith("#"):
            continue  # kmod: "ignoring bad line"
        command, name = words[0], _underscores(words[1])
        rest = words[2].strip() if len(words) > 2 else ""
        if command == "alias":
            rest = _underscores(rest.split()[0]) if rest else ""
            if not rest:
                continue
        out.append(Line(command, name, rest, f"{path}:{number}"))
    return out


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with `\\`-continued lines joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.split("\n"), start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        out.append((start, pending + raw))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _underscores(name: str) -> str:
    """kmod's underscores(): `-` is `_` in module names, except inside [...] patterns."""
    out, depth = [], 0
    for char in name:
        depth += {"[": 1, "]": -1}.get(char, 0)
        out.append("_" if char == "-" and depth <= 0 else char)
    return "".join(out)


# -- the decision --------------------------------------------------------------------------------
def loads_smc(command: str) -> bool:
    """An install command that runs modprobe or insmod on smc loads it (e.g. `install smc
    /sbin/modprobe --ignore-install smc $CMDLINE_OPTS`); anything else (/bin/false, /bin/true,
    a logger call) does not. Said with words, not run: a command naming both is taken as a load."""
    return bool(_LOADS.search(command) and _NAMES_SMC.search(command))


def decide(config: ModprobeConfig, cmdline_blacklist: tuple[str, ...] = ()) -> Decision:
    """Whether modprobe loads smc on this configuration: by name (`modprobe smc`, also as a
    dependency) and through the socket's alias. `cmdline_blacklist`: the running kernel's
    `modprobe.blacklist=` modules (kmod reads them from /proc/cmdline)."""
    notes: list[str] = []
    every = _install_block(config, notes)
    autoload = _alias_block(config, cmdline_blacklist)
    return Decision(every, autoload, tuple(notes))


def _install_block(config: ModprobeConfig, notes: list[str]) -> Block | None:
    install = next((ln for ln in config.of("install") if fnmatchcase(MODULE, ln.name)), None)
    if install is None or loads_smc(install.rest):
        return None
    softdep = next((ln for ln in config.of("softdep") if fnmatchcase(MODULE, ln.name)), None)
    if softdep is not None and _softdep_names(softdep.rest):
        notes.append(f"`{install.text}` ({install.source}) does not apply: kmod ignores an "
                     f"install command when a softdep names modules for smc (`{softdep.text}`, "
                     f"{softdep.source}), and loads smc")
        return None
    return Block(install.text, install.source)


def _softdep_names(rest: str) -> list[str]:
    return [w for w in rest.split() if w not in ("pre:", "post:")]


def _alias_block(config: ModprobeConfig, cmdline_blacklist: tuple[str, ...]) -> Block | None:
    """What stops `modprobe net-pf-43` from loading smc (None: it loads it)."""
    aliases = [ln for ln in config.of("alias") if fnmatchcase(SOCKET_ALIAS, ln.name)]
    if aliases and all(ln.rest != MODULE for ln in aliases):
        return Block(aliases[0].text, aliases[0].source)  # net-pf-43 names another module
    if not aliases:
        command = next((ln for ln in config.of("install") if ln.name == SOCKET_ALIAS), None)
        if command is not None:
            return None if loads_smc(command.rest) else Block(command.text, command.source)
    blacklist = next((ln for ln in config.of("blacklist") if ln.name == MODULE), None)
    if blacklist is not None:
        return Block(blacklist.text, blacklist.source)
    if MODULE in (_underscores(m) for m in cmdline_blacklist):
        return Block(f"modprobe.blacklist={','.join(cmdline_blacklist)}", "/proc/cmdline")
    return None
