"""The one text sanitiser: how a string smcpatch did not write itself is shown.

The rule: every string from outside (a module's vermagic, signer or symbol names, file names, a
root's contents, a merged report's or the matrix's fields, apt's and dpkg's fields, an error that
quotes any of them) is text, never markup, escape sequence or shell syntax:

- on a terminal (`visible`, `fmt`): every character Python calls not printable (C0 and C1
  controls, DEL, newlines and tabs, bidi overrides and other format characters, separators other
  than the space, lone surrogates, which is how a non-UTF-8 byte arrives) is written as its
  escape (`\\n`, `\\x1b`, `\\u202e`; a surrogate-escaped byte as `\\xNN`), so an outside string is
  one line and cannot move the cursor or forge a line; and `fmt` puts values into a rich markup
  template after the template is parsed, so a `[/]` or `[link=...]` in a value is printed as it is;
- in XML (`xml_safe`): what XML 1.0 forbids is written as the same visible escape;
- in a command line printed for a person to run (`shell_word`): quoted for the shell (shlex).

Characters the terminal's encoding cannot show are the stream's job: the CLI sets its streams to
`backslashreplace`.
"""

from __future__ import annotations

import re
import shlex
import string
from typing import Any

from rich.text import Text

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


def shell_word(value: object) -> str:
    """One shell word that `shlex.split` (and sh) read back as the value itself."""
    return shlex.quote(str(value))


# -- markup templates with outside values -------------------------------------------------------
_MARK = 0xE000  # private-use characters stand for the values while the template is parsed


class _Marks(string.Formatter):
    """str.format over a template where each field becomes one private-use character and its
    value (formatted with its spec, made visible) is kept aside as a Text."""

    def __init__(self) -> None:
        self.values: list[Text] = []

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Text):  # ours, built by fmt: its styles kept
            piece = value.copy()
        else:
            piece = Text(visible(format(value, format_spec)))
        self.values.append(piece)
        return chr(_MARK + len(self.values) - 1)


def fmt(template: str, *args: Any, **kwargs: Any) -> Text:
    """A rich Text from a markup template of ours (`"[bold]{}[/]: {}"`) and values from
    anywhere: the template's markup is parsed before any value is in it, so a value is only ever
    text (made visible), styled by the markup around its field. A Text value (an earlier fmt)
    keeps its own styles."""
    marks = _Marks()
    parsed = Text.from_markup(marks.vformat(template, args, kwargs))
    if not marks.values:
        return parsed
    plain = parsed.plain
    cuts = [i for i, ch in enumerate(plain) if _MARK <= ord(ch) < _MARK + len(marks.values)]
    offsets = sorted({o for i in cuts for o in (i, i + 1)})
    out = Text(style=parsed.style, end=parsed.end)
    for piece in parsed.divide(offsets):
        code = ord(piece.plain[0]) - _MARK if len(piece.plain) == 1 else -1
        if 0 <= code < len(marks.values):
            value = marks.values[code]
            for span in reversed(piece.spans):  # the template's style under the value's own
                value.stylize_before(span.style, 0, len(value))
            out.append_text(value)
        else:
            out.append_text(piece)
    return out


def plain(value: object) -> Text:
    """An outside string as a Text: visible, never markup."""
    return value.copy() if isinstance(value, Text) else Text(visible(value))
