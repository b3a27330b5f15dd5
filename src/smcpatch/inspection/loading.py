"""Loading a module's bytes: read (bounded), decompressed in memory (.ko.xz/.gz/.zst, by
content, bombs refused), and the guard that turns any parsing failure into one
:class:`~smcpatch.errors.InspectError` line naming the file."""

from __future__ import annotations

import contextlib
import io
import lzma
import os
import shutil
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError
from elftools.construct import ConstructError

from ..errors import InspectError, ToolMissing
from ..plumbing import proc

#: Refuse to decompress anything larger than this (a module is a few MiB; this guards bombs).
MAX_ELF_SIZE = 512 * 1024 * 1024
#: A file given to the inspector is read only up to this (compressed or not).
MAX_INPUT_SIZE = 256 * 1024 * 1024

ELF_ERRORS: tuple[type[BaseException], ...] = (
    ELFError,
    ELFParseError,
    DWARFError,
    ConstructError,
    struct.error,
    KeyError,
    IndexError,
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    AssertionError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
)


class ZstdMissing(InspectError, ToolMissing):
    """A .ko.zst was given but neither the zstd command nor the zstandard module is available."""



_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZ_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextlib.contextmanager
def guard(label: str) -> Iterator[None]:
    """Turn any parsing failure into a one-line InspectError naming the file."""
    try:
        yield
    except InspectError:
        raise
    except MemoryError as exc:
        raise InspectError(f"{label}: out of memory while parsing") from exc
    except OSError as exc:
        raise InspectError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    except ELF_ERRORS as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InspectError(f"{label}: malformed or truncated ELF: {detail}") from exc


def _decompress_zstd(raw: bytes, label: str) -> bytes:
    exe = shutil.which("zstd")
    if exe is not None:
        return _zstd_command(exe, raw, label)
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        raise ZstdMissing(
            f"{label}: is zstd-compressed but the zstd command is missing"
            " (apt-get install zstd)"
        ) from None
    try:
        dctx = zstandard.ZstdDecompressor()
        with dctx.stream_reader(io.BytesIO(raw)) as reader:
            out: bytes = reader.read(MAX_ELF_SIZE + 1)
    except zstandard.ZstdError as exc:
        raise InspectError(f"{label}: corrupt zstd data: {exc}") from exc
    return out


def _zstd_command(exe: str, raw: bytes, label: str) -> bytes:
    """zstd -dc, reading no more than MAX_ELF_SIZE + 1 bytes of its output (a bomb is cut off
    and refused, never held in memory whole)."""
    with tempfile.TemporaryFile() as source:
        source.write(raw)
        source.seek(0)
        done = proc.run([exe, "-dc", "-q"], stdin=source, capture_output=True, timeout=300,
                        limit=MAX_ELF_SIZE, what=f"{label}: zstd", error=InspectError)
        out, err, code = bytes(done.stdout), bytes(done.stderr), done.returncode
    if len(out) > MAX_ELF_SIZE:
        raise InspectError(f"{label}: decompresses to more than {MAX_ELF_SIZE} bytes")
    if code != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise InspectError(f"{label}: zstd failed: {msg[-1] if msg else code}")
    return out


def _decompress(raw: bytes, label: str) -> bytes:
    if raw.startswith(_XZ_MAGIC):
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            out = dec.decompress(raw, max_length=MAX_ELF_SIZE + 1)
        except lzma.LZMAError as exc:
            raise InspectError(f"{label}: corrupt xz data: {exc}") from exc
        if not dec.eof and len(out) <= MAX_ELF_SIZE:
            raise InspectError(f"{label}: truncated xz data")
    elif raw.startswith(_GZ_MAGIC):
        gz = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = gz.decompress(raw, MAX_ELF_SIZE + 1)
        except zlib.error as exc:
            raise InspectError(f"{label}: corrupt gzip data: {exc}") from exc
        if not gz.eof and len(out) <= MAX_ELF_SIZE:
            raise InspectError(f"{label}: truncated gzip data")
    elif raw.startswith(_ZSTD_MAGIC):
        out = _decompress_zstd(raw, label)
    else:
        return raw
    if len(out) > MAX_ELF_SIZE:
        raise InspectError(f"{label}: decompresses to more than {MAX_ELF_SIZE} bytes")
    return out


def load_elf_bytes(path: Path) -> bytes:
    """The ELF image of ``path``, decompressed in memory if it is .xz/.gz/.zst (by content).

    Raises InspectError when the file cannot be read or decompressed; does not check ELF-ness.
    """
    label = str(path)
    with guard(label):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InspectError(f"{label}: not a regular file (a device, pipe or directory)")
        if st.st_size > MAX_INPUT_SIZE:
            raise InspectError(f"{label}: {st.st_size} bytes, larger than a kernel module can "
                               f"be ({MAX_INPUT_SIZE} at most)")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_INPUT_SIZE + 1)
        if len(raw) > MAX_INPUT_SIZE:
            raise InspectError(f"{label}: larger than a kernel module can be")
        return _decompress(raw, label)


# --------------------------------------------------------------------------------------------
# The in-memory ELF view
