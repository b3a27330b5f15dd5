"""The one text sanitiser: how a string smcpatch did not write itself is shown.

The rule: every string from outside (a module's vermagic, signer or symbol names, file names, a
root's contents, a merged report's or the matrix's fields, apt's and dpkg's fields, an error that
quotes any of them) is text, never markup, escape sequence or shell syntax:

- on a terminal (`visible`): every character Python calls not printable (C0 and C1
  controls, DEL, newlines and tabs, bidi overrides and other format characters, separators other
  than the space, lone surrogates, which is how a non-UTF-8 byte arrives) is written as its
  escape (`\\n`, `\\x1b`, `\\u202e`; a surrogate-escaped byte as `\\xNN`), so an outside string is
  one line and cannot move the cursor or forge a line; outputs.terminal's `fmt` is the one place
  values meet rich markup: it puts them into a template after the template is parsed, so a `[/]`
  or `[link=...]` in a value is printed as it is;
- in XML (`xml_safe`): what XML 1.0 forbids is written as the same visible escape;
- in a command line printed for a person to run (`shell_word`): quoted for the shell (shlex).

Characters the terminal's encoding cannot show are the stream's job: the CLI sets its streams to
`backslashreplace`. No rich here: the library (JUnit, the matrix's lines) uses this module too.
"""

from __future__ import annotations

import re
import shlex

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(value: object) -> str:
    """The string on one line, every non-printable character written as its escape."""
    text = str(value)
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


# XML 1.0's Char production: anything else makes the document not well-formed
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(value: str) -> str:
    """The string with every character XML 1.0 forbids written as its visible escape."""
    return _XML_FORBIDDEN.sub(lambda m: _escape_char(m.group()), value)


# the program the user runs the tasks with: `smcpatch` (the console script) or `inv` (a checkout's
# tasks.py sets it), so that every command printed for a user runs as printed
_FRONT_END = ["smcpatch"]


def set_front_end(program: str) -> None:
    _FRONT_END[0] = program


def command(*words: object) -> str:
    """A command line for the user to run: the front end in use, then each word one shell word."""
    return " ".join(shell_word(w) for w in (_FRONT_END[0], *words))


def shell_word(value: object) -> str:
    """One shell word that `shlex.split` (and sh) read back as the value itself."""
    return shlex.quote(str(value))
