"""kmod's configuration, read exactly the way kmod 30 (Debian 12) reads it, and the one decision:
can smc load? The reference is kmod's own source (libkmod-config.c, libkmod-module.c,
libkmod.c, shared/util.c, tools/modprobe.c at tag v30); tests/installed/test_modprobe_kmod.py
checks this module against kmod's dry run on generated layouts.

Files (libkmod.c default_config_paths, conf_files_list): the directories /etc/modprobe.d,
/run/modprobe.d, /usr/local/lib/modprobe.d and /lib/modprobe.d, in that order. kmod 30 does not
read /usr/lib/modprobe.d: on a merged-/usr root (Debian 12's) it is /lib/modprobe.d; on a root
where it is another directory, its files are not read and a note says so (kmod 32+ read it).
A file is taken when its name does not start with `.`, is 6 bytes or longer and ends in `.conf`
or `.alias`, and it is not a directory (symlinks followed). A name seen in an earlier directory
hides the same name in a later one (so a file in /etc overrides, or with an empty file or a
/dev/null link masks, one in /lib); then every file is read in the byte order of its name,
whatever its directory. A configuration directory that is a file is read as a file named after
it. Every file is read whole, up to FILE_LIMIT; a larger one is refused (BadInput), never read in
part. A FIFO, socket or device other than /dev/null is refused too (kmod would block on it).

Lines (shared/util.c freadline_wrapped, kmod_config_parse): a backslash joins the next line when a
newline follows it, and otherwise is dropped and the next byte kept (at the end of the file it
becomes the byte 0xFF); a CR is an ordinary byte (a CRLF line ends in CR, so `blacklist smc\\r`
names the module "smc\\r"); a NUL ends the line. A line whose first byte is `#` is a comment, even
when it continues onto the next. Words are split on space and tab only (strtok " \\t"): a \\v,
\\f or U+00A0 is part of a word, so `install\\vsmc /bin/false` is one unknown word and the line
is ignored. `install`, `remove`, `options` and `softdep` need a module and a rest (what follows
the one separator after the module: `install smc ` has none and is ignored; an options' tabs
read as spaces); `alias` needs two words, `blacklist` one; module names read `-` as `_`
outside `[...]`, and a name with an unmatched `]` or `[` makes the line bad.
Module names are case-sensitive. Bad lines are ignored.

How kmod loads smc (libkmod-module.c, kmod_module_new_from_lookup then
kmod_module_probe_insert_module):

- The name asked for (`smc`, or the socket's `net-pf-43`, read `net_pf_43`) is looked up, first
  hit wins: the configuration's `alias` lines (shell patterns, every match: their modules are
  loaded instead); a module of that name in modules.dep; an `install` command of exactly that name
  (then a `remove` command); the kernel's modules.alias (net-pf-43 names smc); modules.builtin.
- A module found through an alias is refused when it is blacklisted (`blacklist smc`, or
  `modprobe.blacklist=smc` on the kernel command line). A load by name, or as a dependency, ignores
  blacklists.
- Each module on the way (its softdep `pre:` modules, its dependencies, itself, its `post:`
  modules) is inserted, or, when the first `install` line whose pattern matches its name exists,
  that command runs instead. kmod ignores the install command of a module whose first matching
  `softdep` line names at least one module that resolves (is found by the lookup above); a softdep
  whose modules all fail to resolve leaves the install command in force.

"Blocked" for smcpatch means every load blocked: an install command that does not load smc, the
kernel's module_blacklist, or modules_disabled. A blacklist (or an alias pointing net-pf-43
elsewhere) stops the socket's autoload only: `modprobe smc` still loads it, and so does a module
that depends on smc: smc_diag, whose own alias (the SMC_PNETID generic netlink family, which any
user may ask for) brings smc in as a dependency, where blacklists do not apply. An install command
smcpatch cannot read (a script, a shell construct) counts as loading smc, with a note.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..errors import BadInput
from ..plumbing.files import MB
from .root import Root

CONFIG_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
               "/lib/modprobe.d")
NOT_READ_DIR = "/usr/lib/modprobe.d"  # kmod 32+ only; kmod 30 reads it only as /lib's target
SUFFIXES = (b".conf", b".alias")
# kmod reads a file whole, whatever its size; smcpatch reads it whole too, up to this (a real
# modprobe.d file is a few KB): a larger one is refused, never judged from a part
FILE_LIMIT = 64 * MB
MODULE = "smc"
SOCKET_ALIAS = "net_pf_43"  # PF_SMC = 43; kmod normalizes the alias net-pf-43 to this
_SEPARATORS = b" \t"  # strtok_r(line, "\t ", ...): nothing else separates words
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_DEV_NULL = (1, 3)  # the character device /dev/null: reads as empty, as kmod finds it


@dataclass(frozen=True)
class Line:
    """One command of the configuration (text: the file's bytes, surrogate-escaped)."""

    command: str  # alias, blacklist, install, remove, options, softdep
    name: str  # its module name or pattern, `-` read as `_` (kmod's underscores())
    rest: str  # an alias's module, an install command, options, softdep's lists
    source: str  # /etc/modprobe.d/x.conf:3

    @property
    def text(self) -> str:
        return f"{self.command} {self.name} {self.rest}".strip()


@dataclass(frozen=True)
class ModprobeConfig:
    files: tuple[str, ...]  # read, in kmod's order (machine paths)
    hidden: tuple[str, ...]  # not read: a file of the same name in an earlier directory
    lines: tuple[Line, ...]
    ignored: tuple[str, ...] = ()  # kmod's "ignoring bad line" (file:line: the line)
    notes: tuple[str, ...] = ()

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
class Action:
    """What kmod does with smc for one request, as `modprobe -n -v` prints it: insmod (smc.ko
    inserted), install (a command runs instead), builtin (in the kernel), or none (smc is not
    reached: redirected, blacklisted, not found)."""

    kind: str  # insmod | install | builtin | none
    command: str = ""  # the install command
    options: str = ""  # the options kmod passes (`options` lines, joined as kmod joins them)
    why: Block | None = None  # the line that decided: install, alias, blacklist
    printed: tuple[str, ...] = ()  # every line `modprobe -n -v` prints for the request
    # another module's install command on the way that may load smc itself (`alias smc x`,
    # `install x /sbin/modprobe --ignore-install smc`), and where it was said
    other_command: str = ""
    other: Block | None = None


@dataclass(frozen=True)
class Decision:
    """Whether smc can load: `every_load` stops `modprobe smc` too, `autoload` only the
    socket's net-pf-43 alias. `by_name` and `by_alias`: kmod's action on smc for
    `modprobe smc` and `modprobe net-pf-43`."""

    every_load: Block | None
    autoload: Block | None
    notes: tuple[str, ...] = field(default=())
    by_name: Action = Action("insmod")
    by_alias: Action = Action("insmod")

    @property
    def loadable(self) -> bool:
        return self.every_load is None

    @property
    def autoloads(self) -> bool:
        return self.every_load is None and self.autoload is None


# -- reading -------------------------------------------------------------------------------------
def read_config(root: Root, release: str | None = None) -> ModprobeConfig:
    """Every configuration file kmod reads on the machine at ROOT, parsed. With `release`, the
    kernel's modules.softdep too (kmod reads it as a file named "modules.softdep")."""
    chosen: dict[bytes, str] = {}
    hidden: list[str] = []
    if release is not None:
        chosen[b"modules.softdep"] = f"/lib/modules/{release}/modules.softdep"
    for directory in CONFIG_DIRS:
        for name, path in _conf_files(root, directory):
            if name not in chosen:
                chosen[name] = path
            else:
                hidden.append(path)
    files = [chosen[name] for name in sorted(chosen)]
    lines: list[Line] = []
    ignored: list[str] = []
    for path in files:
        parsed, bad = _parse_bytes(_read_file(root, path), path)
        lines += parsed
        ignored += bad
    return ModprobeConfig(tuple(files), tuple(hidden), tuple(lines), tuple(ignored),
                          tuple(_not_read_note(root)))


def _conf_files(root: Root, directory: str) -> list[tuple[bytes, str]]:
    """(name, machine path) of the files kmod takes from one configuration path, listed inside
    ROOT (installed.root: links followed within it, never on the host)."""
    kind = root.kind(directory)
    if kind is None:  # absent: kmod skips it
        return []
    if kind != "dir":  # kmod reads a non-directory as one file, by its name
        return [(os.path.basename(directory).encode(), directory)]
    out = []
    for text_name in root.listdir(directory):
        name = os.fsencode(text_name)
        if name.startswith(b".") or len(name) < 6 or not name.endswith(SUFFIXES):
            continue
        path = f"{directory}/{text_name}"
        if root.kind(path) == "dir":  # "Directories inside directories are not
            continue  # supported": skipped, its name hides nothing
        out.append((name, path))
    return out


def _not_read_note(root: Root) -> list[str]:
    other, lib = root.resolve(NOT_READ_DIR), root.resolve(CONFIG_DIRS[-1])
    if root.kind(NOT_READ_DIR) != "dir" or other == lib:
        return []
    names = [n for n in root.listdir(NOT_READ_DIR) if n.endswith((".conf", ".alias"))]
    if not names:
        return []
    return [f"{root.show(NOT_READ_DIR)} is not {root.show(CONFIG_DIRS[-1])}: kmod 30 (Debian 12) "
            f"does not read its {len(names)} file(s), kmod 32 and later do; judged as kmod 30"]


def _read_file(root: Root, path: str) -> bytes:
    """A configuration file's bytes, whole, read inside ROOT. What is not there reads as nothing
    (kmod skips it), as does /dev/null (a mask); a file larger than FILE_LIMIT, a FIFO, socket
    or other device is refused: reading it in part, or not at all, would judge from less than
    kmod reads."""
    kind = root.kind(path)
    if kind is None or kind == "dir":
        return b""
    if kind == "other":
        with contextlib.suppress(OSError):
            st = os.stat(root.resolve(path), follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev),
                                              os.minor(st.st_rdev)) == _DEV_NULL:
                return b""
        raise BadInput(f"{root.show(path)}: not a regular file (a device, pipe or socket): kmod "
                       "would read it as configuration; refusing to judge without it")
    data = root.read(path, FILE_LIMIT, "a modprobe.d file")
    return b"" if data is None else data


def parse(text: str | bytes, path: str) -> list[Line]:
    """kmod's reading of one file: its commands, bad lines left out."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return _parse_bytes(data, path)[0]


def _parse_bytes(data: bytes, path: str) -> tuple[list[Line], list[str]]:
    out: list[Line] = []
    bad: list[str] = []
    for number, raw in logical_lines(data):
        line = raw.split(b"\0", 1)[0]  # C strings: a NUL ends the line
        if not line or line.startswith(b"#"):
            continue
        words = _Words(line)
        command = words.next()
        if command is None:
            continue
        parsed = _command(command, words)
        where = f"{path}:{number}"
        if parsed is None:
            if command not in (b"include", b"config"):  # deprecated: skipped, not "bad"
                bad.append(f"{where}: {_text(line)}")
            continue
        name, rest = parsed
        out.append(Line(_text(command), name, rest, where))
    return out, bad


def _command(command: bytes, words: _Words) -> tuple[str, str] | None:
    """(module name, rest) of one of kmod's commands; None: a bad line."""
    if command == b"alias":
        alias, module = words.next(), words.next()
        name, target = underscores(alias), underscores(module)
        return None if name is None or target is None else (name, target)
    if command == b"blacklist":
        name = underscores(words.next())
        return None if name is None else (name, "")
    if command in (b"options", b"install", b"remove", b"softdep"):
        name = underscores(words.next())
        rest = words.rest()
        if name is None or rest is None:
            return None
        if command == b"options":  # kmod_config_add_options: tabs read as spaces
            rest = rest.replace(b"\t", b" ")
        return name, _text(rest)
    return None


class _Words:
    """strtok_r over one line: words split on space and tab; rest() is strtok_r(NULL, "\\0")."""

    def __init__(self, line: bytes) -> None:
        self.line, self.at = line, 0

    def next(self) -> bytes | None:
        line, at = self.line, self.at
        while at < len(line) and line[at] in _SEPARATORS:
            at += 1
        if at >= len(line):
            self.at = at
            return None
        end = at
        while end < len(line) and line[end] not in _SEPARATORS:
            end += 1
        self.at = min(end + 1, len(line))  # the separator that ended the word is consumed
        return line[at:end]

    def rest(self) -> bytes | None:
        if self.at >= len(self.line):
            return None
        rest, self.at = self.line[self.at:], len(self.line)
        return rest


def logical_lines(data: bytes) -> list[tuple[int, bytes]]:
    """(first line number, bytes) as freadline_wrapped gives them: `\\` + newline joins lines,
    `\\` + another byte is that byte, `\\` at the end of the file is 0xFF (getc's EOF stored)."""
    out: list[tuple[int, bytes]] = []
    buf = bytearray()
    line, start, at, size = 1, 1, 0, len(data)
    while at < size:
        byte = data[at]
        at += 1
        if byte == 0x0A:
            out.append((start, bytes(buf)))
            buf.clear()
            line += 1
            start = line
        elif byte == 0x5C:
            if at >= size:
                buf.append(0xFF)
            elif data[at] == 0x0A:
                at += 1
                line += 1
            else:
                buf.append(data[at])
                at += 1
        else:
            buf.append(byte)
    if buf:
        out.append((start, bytes(buf)))
    return out


def underscores(word: bytes | None) -> str | None:
    """kmod's underscores(): `-` is `_` outside [...]; None for no word, an unmatched `]`, or
    a `[` with no `]` (kmod: a bad line)."""
    if word is None:
        return None
    out = bytearray()
    at = 0
    while at < len(word):
        byte = word[at]
        if byte == ord("]"):
            return None
        if byte == ord("["):
            end = word.find(b"]", at)
            if end < 0:
                return None
            out += word[at:end]  # kmod skips to the `]`, which the loop then copies as is
            at = end
            out.append(word[at])
        else:
            out.append(ord("_") if byte == ord("-") else byte)
        at += 1
    return _text(bytes(out))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def raw(text: str) -> bytes:
    """The configuration's bytes of a text this module gives out."""
    return text.encode("utf-8", "surrogateescape")


# -- fnmatch(3), flags 0 ---------------------------------------------------------------------------
_CLASSES = {"alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "digit": "0-9", "lower": "a-z",
            "upper": "A-Z", "space": r" \t\n\r\f\v", "blank": r" \t", "punct": re.escape(
                "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), "xdigit": "0-9a-fA-F",
            "print": r"\x20-\x7e", "graph": r"\x21-\x7e", "cntrl": r"\x00-\x1f\x7f"}


def fnmatch(pattern: str, name: str) -> bool:
    """glibc's fnmatch(pattern, name, 0) for kmod's patterns: `*`, `?`, `[...]` with `!` or `^`,
    `\\` quoting the next character, POSIX classes; `*` also matches `/`."""
    return re.fullmatch(_regex(pattern), name, re.DOTALL) is not None


def _regex(pattern: str) -> str:
    out, at = [], 0
    while at < len(pattern):
        char = pattern[at]
        at += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and at < len(pattern):
            out.append(re.escape(pattern[at]))
            at += 1
        elif char == "[":
            parsed = _bracket(pattern, at)
            if parsed is None:
                out.append(re.escape("["))
            else:
                regex, at = parsed
                out.append(regex)
        else:
            out.append(re.escape(char))
    return "".join(out)


def _bracket(pattern: str, at: int) -> tuple[str, int] | None:
    negate = at < len(pattern) and pattern[at] in "!^"
    at += negate
    items: list[str] = []
    first = True
    while at < len(pattern):
        char = pattern[at]
        if char == "]" and not first:
            body = "".join(items)
            return (f"[^{body}]" if negate else f"[{body}]"), at + 1
        first = False
        if pattern.startswith("[:", at):
            end = pattern.find(":]", at + 2)
            if end > 0 and pattern[at + 2:end] in _CLASSES:
                items.append(_CLASSES[pattern[at + 2:end]])
                at = end + 2
                continue
        if char == "\\" and at + 1 < len(pattern):
            at += 1
            char = pattern[at]
        if char == "-" and items and at + 1 < len(pattern) and pattern[at + 1] != "]":
            items.append("-")
        else:
            items.append(re.escape(char))
        at += 1
    return None  # no closing `]`: a literal `[`


# -- the kernel's own indexes --------------------------------------------------------------------
@dataclass(frozen=True)
class KernelIndex:
    """What one kernel's modules directory tells kmod: modules.dep (each module's path and its
    dependencies), modules.alias, modules.builtin. Without one (None), or where modules.alias
    cannot be read (None), smcpatch assumes Debian's: smc in modules.dep, net-pf-43 naming it;
    the answer that does not call a loadable smc blocked."""

    deps: dict[str, tuple[str, ...]]
    paths: dict[str, str]
    aliases: tuple[tuple[str, str], ...] | None
    builtin: frozenset[str]

    @classmethod
    def read(cls, root: Root, release: str) -> KernelIndex:
        base = f"/lib/modules/{release}"
        deps: dict[str, tuple[str, ...]] = {}
        paths: dict[str, str] = {}
        for line in _index_lines(root, f"{base}/modules.dep"):
            module, _, rest = line.partition(":")
            name = _module_name(module)
            paths.setdefault(name, module if module.startswith("/") else f"{base}/{module}")
            deps.setdefault(name, tuple(_module_name(d) for d in rest.split()))
        aliases: list[tuple[str, str]] | None = None
        if root.kind(f"{base}/modules.alias") == "file":
            aliases = []
            for line in _index_lines(root, f"{base}/modules.alias"):
                words = line.split()
                if len(words) == 3 and words[0] == "alias":
                    aliases.append((_alias_normalize(words[1]), words[2]))
        builtin = frozenset(_module_name(line) for line in
                            _index_lines(root, f"{base}/modules.builtin"))
        return cls(deps, paths, None if aliases is None else tuple(aliases), builtin)


def _index_lines(root: Root, path: str) -> list[str]:
    try:
        data = _read_file(root, path)
    except BadInput:
        return []
    return [line for line in _text(data).splitlines() if line and not line.startswith("#")]


def _module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", name)
    return name.replace("-", "_")


def _alias_normalize(alias: str) -> str:
    return underscores(raw(alias)) or alias


# -- install commands ----------------------------------------------------------------------------
_NO_LOAD = {"true", "false", ":", "exit", "echo", "logger", "printf", "return"}
_LOADERS = {"modprobe", "insmod"}
_BIN_DIRS = ("", "/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/")
_OPERATORS = {";", "&", "&&", "|", "||", "\n"}


def classify(command: str) -> str:
    """What an install command does to smc, read, never run: "loads" (it runs modprobe or
    insmod on smc), "blocks" (only commands known not to load anything: true, false, exit,
    echo, logger, printf, ':'), or "unknown" (anything else: a script, a shell construct)."""
    if re.search(r"[^\x20-\x7e\t\n]", command):
        return "unknown"  # a CR, \v, U+00A0 ... inside a word: a program smcpatch cannot name
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace = " \t\n"
        lexer.wordchars += "$%+,@:{}[]!^#`"  # word characters to sh, not separate tokens
        lexer.commenters = ""  # `#` starts a comment only at a word's start: done below
        tokens = list(lexer)
    except ValueError:
        return "unknown"
    verdicts = [_simple(words) for words in _simple_commands(tokens)]
    if "loads" in verdicts:
        return "loads"
    return "unknown" if "unknown" in verdicts else "blocks"


def _simple_commands(tokens: list[str]) -> Iterable[list[str]]:
    words: list[str] = []
    for token in tokens:
        if token.startswith("#"):
            break  # the rest of the line is a comment
        if token in _OPERATORS:
            yield words
            words = []
        else:
            words.append(token)
    yield words


def _simple(words: list[str]) -> str:
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return "blocks"  # nothing runs: kmod counts the install as done, smc not inserted
    program = words[0]
    if any(char in "".join(words) for char in "()<>`") or "$" in program:
        return "unknown"
    known = [d + p for d in _BIN_DIRS for p in _NO_LOAD | _LOADERS]
    if program not in known:
        return "unknown"
    base = program.rsplit("/", 1)[-1]
    if base in _LOADERS:
        named = [w for w in words[1:] if not w.startswith("-") and "$" not in w]
        if any(re.search(r"(^|/)smc(\.ko\S*)?$", w) or w.replace("-", "_") == SOCKET_ALIAS
               for w in named):
            return "loads"
        return "unknown" if any("$" in w for w in words[1:]) else "blocks"
    return "blocks"


def loads_smc(command: str) -> bool:
    """An install command that runs modprobe or insmod on smc loads it (e.g. `install smc
    /sbin/modprobe --ignore-install smc $CMDLINE_OPTS`); /bin/false, /bin/true, a logger call
    do not. Said with words, not run."""
    return classify(command) == "loads"


# -- kmod's lookup and probe --------------------------------------------------------------------
@dataclass(frozen=True)
class _Module:
    name: str
    alias: str | None = None  # the alias it was found through (blacklists apply)
    command: Line | None = None  # an install command found by exact name (lookup)
    builtin: bool = False


class _Kmod:
    """kmod_module_new_from_lookup and kmod_module_probe_insert_module over one configuration
    and one kernel's index, as `modprobe -n` runs them."""

    def __init__(self, config: ModprobeConfig, blacklist: tuple[str, ...],
                 kernel: KernelIndex | None, notes: list[str]) -> None:
        self.config, self.kernel, self.notes = config, kernel, notes
        self.blacklist = [(ln.name, ln) for ln in config.of("blacklist")]
        self.cmdline_blacklist = blacklist

    # kmod_module_new_from_lookup
    def lookup(self, given: str) -> list[_Module]:
        name = underscores(raw(given))  # alias_normalize
        if name is None:
            return []
        found = [_Module(ln.rest, alias=ln.name) for ln in self.config.of("alias")
                 if fnmatch(ln.name, name)]
        if found:
            return found
        if ":" not in name and self._in_moddep(name):
            return [_Module(name)]
        for command in ("install", "remove"):
            line = next((ln for ln in self.config.of(command) if ln.name == name), None)
            if line is not None:
                return [_Module(name, command=line if command == "install" else None)]
        if self.kernel is None or self.kernel.aliases is None:
            if name == SOCKET_ALIAS:
                return [_Module(MODULE, alias=name)]
            return [] if self.kernel is None else self._builtin_lookup(name)
        aliased = [_Module(module, alias=name) for pattern, module in self.kernel.aliases
                   if fnmatch(pattern, name)]
        return aliased or self._builtin_lookup(name)

    def _builtin_lookup(self, name: str) -> list[_Module]:
        builtin = self.kernel is not None and name in self.kernel.builtin
        return [_Module(name, builtin=True)] if builtin else []

    def _in_moddep(self, name: str) -> bool:
        if self.kernel is None:
            return name == MODULE
        return name in self.kernel.deps

    def blacklisted(self, name: str) -> Block | None:
        line = next((ln for bl, ln in self.blacklist if bl == name), None)
        if line is not None:
            return Block(line.text, line.source)
        if name in self.cmdline_blacklist:  # kmod takes these as written (no `-` to `_`)
            return Block(f"modprobe.blacklist={','.join(self.cmdline_blacklist)}",
                         "/proc/cmdline")
        return None

    # kmod_module_get_probe_list
    def probe_list(self, module: _Module) -> list[tuple[_Module, bool]]:
        visited: set[tuple[str, str | None]] = set()  # kmod's module objects: name and alias
        out: list[tuple[_Module, bool]] = []

        def get(mod: _Module) -> None:
            if (mod.name, mod.alias) in visited:
                return
            visited.add((mod.name, mod.alias))
            for dep in self._deps(mod.name):
                fill(_Module(dep))
            fill(mod)

        def fill(mod: _Module) -> None:
            pre, post = self.softdeps(mod.name)
            for other in pre:
                get(other)
            out.append((mod, bool(pre or post)))
            for other in post:
                get(other)

        get(module)
        return out

    def _deps(self, name: str) -> tuple[str, ...]:
        return () if self.kernel is None else self.kernel.deps.get(name, ())

    def softdeps(self, name: str) -> tuple[list[_Module], list[_Module]]:
        line = next((ln for ln in self.config.of("softdep") if fnmatch(ln.name, name)), None)
        if line is None:
            return [], []
        pre, post = softdep_lists(line.rest)
        if self.kernel is None and (pre or post):
            # which names resolve is the kernel's: assume they do (kmod then ignores the
            # install command), the answer that does not call a loadable smc blocked
            self.notes.append(f"`{line.text}` ({line.source}): if its modules exist, kmod "
                              f"ignores {name}'s install command; counted as if they do")
            return [_Module(n) for n in pre], [_Module(n) for n in post]
        return ([m for n in pre for m in self.lookup(n)],
                [m for n in post for m in self.lookup(n)])

    def install_command(self, mod: _Module) -> Line | None:
        if mod.command is not None:
            return mod.command
        return next((ln for ln in self.config.of("install") if fnmatch(ln.name, mod.name)),
                    None)

    def options(self, mod: _Module) -> str:
        texts = [ln.rest for ln in self.config.of("options")
                 if ln.name == mod.name or (mod.alias is not None and ln.name == mod.alias)]
        joined = " ".join(t for t in texts if t)
        return f"{joined} " if joined else ""

    # what `modprobe -n NAME` does to smc
    def request(self, name: str) -> Action:
        """smc's action for `modprobe NAME`: its own line, or (kind none) the reason it is not
        reached; `command` then names another module's install command on the way that may
        load smc itself (`alias smc x` with `install x /sbin/modprobe --ignore-install smc`).
        `printed`: every line `modprobe -n -v NAME` prints."""
        modules = self.lookup(name)
        if not modules:
            return Action("none", why=Block(f"modprobe {name}: not found", "modules.dep"))
        seen: Action | None = None
        stop: Block | None = None
        other: Line | None = None
        printed: list[str] = []
        for module in modules:
            if module.alias is not None:
                block = self.blacklisted(module.name)
                if block is not None:
                    stop = stop or block
                    continue
            if self._builtin(module):
                if module.name == MODULE:
                    seen = seen or Action("builtin")
                continue
            for mod, ignorecmd in self.probe_list(module):
                if self._builtin(mod):
                    continue  # already in the kernel: kmod says nothing
                line = None if ignorecmd else self.install_command(mod)
                options = self.options(mod)
                if line is not None:
                    printed.append(f"install {line.rest} {options}")
                elif self.kernel is not None and mod.name in self.kernel.paths:
                    printed.append(f"insmod {self.kernel.paths[mod.name]} {options}")
                if mod.name == MODULE:
                    seen = seen or self._action(mod, ignorecmd)
                elif line is not None and classify(line.rest) != "blocks":
                    other = other or line
                elif line is not None and module.command is line:
                    stop = stop or Block(line.text, line.source)
        lines = tuple(printed)
        if other is not None:
            block = Block(other.text, other.source)
            if seen is not None:
                return replace(seen, printed=lines, other_command=other.rest, other=block)
            return Action("none", why=block, printed=lines, other_command=other.rest,
                          other=block)
        if seen is not None:
            return replace(seen, printed=lines)
        if stop is None and modules[0].alias is not None and modules[0].name != MODULE:
            alias = next((ln for ln in self.config.of("alias") if fnmatch(ln.name, name)), None)
            if alias is not None:
                stop = Block(alias.text, alias.source)
        return Action("none", why=stop, printed=lines)

    def _builtin(self, mod: _Module) -> bool:
        return mod.builtin or (self.kernel is not None and mod.name in self.kernel.builtin)

    def _action(self, mod: _Module, ignorecmd: bool) -> Action:
        line = self.install_command(mod)
        options = self.options(mod)
        if line is not None and not ignorecmd:
            return Action("install", line.rest, options, Block(line.text, line.source))
        if line is not None:
            self.notes.append(f"`{line.text}` ({line.source}) does not apply: a softdep "
                              f"for {mod.name} names modules, and kmod then ignores it")
        return Action("insmod", "", options)


def softdep_lists(rest: str) -> tuple[list[str], list[str]]:
    """kmod_config_add_softdep's own tokeniser, quirks kept: words split on C isspace bytes
    after `pre:` or `post:`; a separator at the very start stays in the first word (`softdep
    smc  pre: x`, two spaces, has no `pre:` and names nothing)."""
    pre: list[str] = []
    post: list[str] = []
    mode: list[str] | None = None
    was_space, start, at, end = False, 0, 0, len(rest)
    while True:
        done = at >= end
        if not done:
            if rest[at] not in _C_SPACE:
                was_space = False
                at += 1
                continue
            if was_space:
                start = at + 1
                at += 1
                continue
            was_space = True
            if start >= at:
                at += 1
                continue
        word = rest[start:at]
        if word == "pre:":
            mode = pre
        elif word == "post:":
            mode = post
        elif (not done or not was_space) and mode is not None:
            mode.append(word)
        start = at + 1
        if done:
            return pre, post
        at += 1


# -- the decision --------------------------------------------------------------------------------
def decide(config: ModprobeConfig, cmdline_blacklist: tuple[str, ...] = (),
           kernel: KernelIndex | None = None) -> Decision:
    """Whether modprobe loads smc on this configuration: by name (`modprobe smc`, also as a
    dependency) and through the socket's alias. `cmdline_blacklist`: the running kernel's
    `modprobe.blacklist=` modules (kmod reads them from /proc/cmdline). `kernel`: the kernel's
    modules directory (None: Debian's smc assumed, softdeps taken to resolve)."""
    notes: list[str] = list(config.notes)
    kmod = _Kmod(config, cmdline_blacklist, kernel, notes)
    as_dependency = kmod._action(_Module(MODULE), bool(any(kmod.softdeps(MODULE))))
    by_name = kmod.request(MODULE)
    by_alias = kmod.request(SOCKET_ALIAS)
    alias_loads = _loads(by_alias, notes)
    # smc's install command stops every load unless a request reaches a command that loads
    # smc past it (`modprobe --ignore-install smc`, insmod)
    every = _blocking(as_dependency, notes)
    if _loads(by_name, notes) or alias_loads:
        every = None
    autoload = None
    if every is None and not alias_loads:
        autoload = by_alias.why or Block("modprobe net-pf-43 does not reach smc", "kmod")
    notes += [f"kmod ignores {line}" for line in config.ignored
              if re.search(r"smc|net.pf.43", line)]
    return Decision(every, autoload, tuple(dict.fromkeys(notes)), by_name, by_alias)


def _blocking(action: Action, notes: list[str]) -> Block | None:
    """The install command that stops smc, when it does not load smc."""
    if action.kind != "install" or action.why is None:
        return None
    verdict = classify(action.command)
    if verdict == "unknown":
        notes.append(f"cannot tell whether `{action.why.text}` ({action.why.source}) loads smc: "
                     "counted as loadable")
        return None
    return None if verdict == "loads" else action.why


def _loads(action: Action, notes: list[str]) -> bool:
    if action.kind in ("insmod", "builtin"):
        return True
    if action.other_command and _blocking(Action("install", action.other_command,
                                                 why=action.other), notes) is None:
        return True  # another module's install command loads smc (or may)
    return action.kind == "install" and _blocking(action, notes) is None


def loads(action: Action) -> bool:
    """Whether smc ends up loaded (or may: an install command smcpatch cannot read)."""
    return _loads(action, [])
