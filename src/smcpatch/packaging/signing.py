"""Module signing: sign a module with the kernel's own sign-file, and read an appended signature.

A signed module is the ELF file followed by the signature blob, a ``struct module_signature``
and the magic string (include/linux/module_signature.h)::

    <ELF> <PKCS#7 DER (sig_len bytes)> <algo hash id_type signer_len key_id_len pad[3] sig_len:be32>
    "~Module signature appended~\\n"

For PKCS#7 signatures (id_type 2, the only kind sign-file writes) the struct's algo/hash/signer
fields are zero: the signer and the digest algorithm live in the PKCS#7 SignedData. They are read
here with a small DER walk (no third-party ASN.1 library): SignerInfo.sid (issuer + serial, or a
subjectKeyIdentifier), SignerInfo.digestAlgorithm and signatureAlgorithm. sign-file does not embed
the certificate, so the signer named is the *issuer* of the signing certificate (for Debian's
modules "Debian Secure Boot CA"; for a self-signed key its own subject).
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import inspection
from ..errors import BadInput, InspectError, SmcpatchError, ToolMissing
from ..pipeline import build
from ..pipeline.fetch import Workspace
from ..pipeline.report import TargetReport
from ..plumbing.cache import Cache

MAGIC = b"~Module signature appended~\n"
_SIG_STRUCT = struct.Struct(">BBBBB3xI")  # struct module_signature, 12 bytes
PKEY_ID_PGP, PKEY_ID_X509, PKEY_ID_PKCS7 = 0, 1, 2
ID_TYPES = {PKEY_ID_PGP: "PGP", PKEY_ID_X509: "X509", PKEY_ID_PKCS7: "PKCS#7"}
HASH_ALGOS = ("sha1", "sha224", "sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512")
OPENSSL_INSTALL = "apt-get install -y openssl"
# Shared libraries sign-file links, and the Debian package that ships each (bookworm names).
_LIB_PACKAGES = {"libcrypto.so.3": "libssl3", "libssl.so.3": "libssl3",
                 "libcrypto.so.1.1": "libssl1.1", "libc.so.6": "libc6"}

_OIDS = {
    "1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512", "2.16.840.1.101.3.4.2.8": "sha3-256",
    "2.16.840.1.101.3.4.2.9": "sha3-384", "2.16.840.1.101.3.4.2.10": "sha3-512",
    "1.2.156.10197.1.401": "sm3",
    "1.2.840.113549.1.1.1": "rsaEncryption", "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
    "1.2.840.10045.2.1": "id-ecPublicKey", "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384", "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.3.101.112": "ED25519",
    "1.2.840.113549.1.7.2": "signedData",
    # attribute types of an X.500 name
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "1.2.840.113549.1.9.1": "emailAddress",
}


# -- reading a signature -----------------------------------------------------------------------
def module_signature(path: Path) -> dict[str, Any] | None:
    """The appended signature of a module (.ko, .ko.xz/.gz/.zst), or None if it is unsigned.

    Returns {"signer", "issuer", "serial", "key_id", "hash_algorithm", "signature_algorithm",
    "id_type", "signature_bytes"}. Raises InspectError for a truncated or malformed signature.
    """
    return parse_signature(inspection.load_elf_bytes(path), str(path))


def parse_signature(data: bytes, label: str = "module") -> dict[str, Any] | None:
    split = split_signature(data, label)
    if split is None:
        return None
    _, blob, fields = split
    algo, hash_id, id_type, signer_len, key_id_len, sig_len = fields
    result: dict[str, Any] = {"id_type": ID_TYPES.get(id_type, str(id_type)),
                              "signature_bytes": sig_len, "signer": None, "issuer": None,
                              "serial": None, "key_id": None, "hash_algorithm": None,
                              "signature_algorithm": None}
    if id_type != PKEY_ID_PKCS7:  # legacy formats: signer name and key id precede the signature
        raw = blob
        signer = raw[:signer_len].decode("utf-8", "replace")
        key_id = raw[signer_len:signer_len + key_id_len].hex()
        result.update(signer=signer or None, key_id=key_id or None,
                      hash_algorithm=_LEGACY_HASHES.get(hash_id, str(hash_id)),
                      signature_algorithm=str(algo))
        return result
    try:
        result.update(_pkcs7_signer(blob))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise InspectError(f"{label}: malformed PKCS#7 module signature: {exc}") from exc
    return result


# hash_algo indices of include/uapi/linux/hash_info.h (only used by the pre-PKCS#7 formats)
_LEGACY_HASHES = {0: "md4", 1: "md5", 2: "sha1", 3: "rmd160", 4: "sha256", 5: "sha384",
                  6: "sha512", 7: "sha224"}


def split_signature(
    data: bytes, label: str = "module"
) -> tuple[bytes, bytes, tuple[int, ...]] | None:
    """(unsigned module, signature blob, struct fields), or None when there is no signature."""
    if not data.endswith(MAGIC):
        return None
    end = len(data) - len(MAGIC)
    if end < _SIG_STRUCT.size:
        raise InspectError(f"{label}: truncated module signature (no struct module_signature)")
    fields = _SIG_STRUCT.unpack_from(data, end - _SIG_STRUCT.size)
    _algo, _hash, _id_type, signer_len, key_id_len, sig_len = fields
    total = sig_len + signer_len + key_id_len
    start = end - _SIG_STRUCT.size - total
    if sig_len == 0 or start < 0:
        raise InspectError(f"{label}: module signature length {sig_len} does not fit the file")
    return data[:start], data[start:end - _SIG_STRUCT.size], tuple(fields)


def verify_signature(path: Path, cert: Path) -> bool:
    """True when the module's appended PKCS#7 signature verifies with ``cert`` over its content.

    Checks the signature cryptographically (openssl cms -verify), not the certificate's chain of
    trust: that is the kernel keyring's job. False for an unsigned module or another signer.
    """
    data = inspection.load_elf_bytes(path)
    split = split_signature(data, str(path))
    if split is None:
        return False
    content, blob, _ = split
    with tempfile.TemporaryDirectory(prefix="smcpatch-verify-") as tmp:
        (Path(tmp) / "content").write_bytes(content)
        (Path(tmp) / "sig.der").write_bytes(blob)
        proc = subprocess.run(
            [_openssl(), "cms", "-verify", "-binary", "-inform", "DER", "-in", f"{tmp}/sig.der",
             "-content", f"{tmp}/content", "-certfile", str(cert), "-nointern", "-noverify",
             "-out", "/dev/null"], capture_output=True, text=True, check=False, timeout=60,
            stdin=subprocess.DEVNULL)
    return proc.returncode == 0


# -- a minimal DER reader ------------------------------------------------------------------------
class _Der:
    """One TLV: tag byte, content bytes."""

    __slots__ = ("tag", "content")

    def __init__(self, tag: int, content: bytes) -> None:
        self.tag, self.content = tag, content

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[_Der]:
        return _der_list(self.content)


def _der_read(data: bytes, pos: int) -> tuple[_Der, int]:
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used by PKCS#7 signatures")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("indefinite or oversized DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("DER element runs past the end of the signature")
    return _Der(tag, data[pos:pos + length]), pos + length


def _der_list(data: bytes) -> list[_Der]:
    items, pos = [], 0
    while pos < len(data):
        item, pos = _der_read(data, pos)
        items.append(item)
    return items


def _oid(content: bytes) -> str:
    first = content[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _name(der: _Der) -> tuple[str, str | None]:
    """An X.500 Name → ("CN=..., O=...", the CN)."""
    parts: list[str] = []
    common: str | None = None
    for rdn in der.children():  # SET OF AttributeTypeAndValue
        for atv in rdn.children():
            oid_der, value = atv.children()[:2]
            key = _OIDS.get(_oid(oid_der.content), _oid(oid_der.content))
            enc = "utf-16-be" if value.tag == 0x1E else "utf-8"  # BMPString
            text = value.content.decode(enc, "replace")
            parts.append(f"{key}={text}")
            if key == "CN":
                common = text
    return ", ".join(parts), common


def _pkcs7_signer(blob: bytes) -> dict[str, Any]:
    content_info, _ = _der_read(blob, 0)
    ci = content_info.children()
    if _oid(ci[0].content) != "1.2.840.113549.1.7.2" or ci[1].tag != 0xA0:
        raise ValueError("not a PKCS#7 signedData")
    signed_data = ci[1].children()[0].children()
    signer_infos = signed_data[-1]
    if signer_infos.tag != 0x31 or not signer_infos.children():
        raise ValueError("no SignerInfo")
    info = signer_infos.children()[0].children()  # version, sid, digestAlgorithm, ...
    sid, digest = info[1], info[2]
    out: dict[str, Any] = {}
    if sid.tag == 0x30:  # IssuerAndSerialNumber
        issuer, serial = sid.children()[:2]
        out["issuer"], out["signer"] = _name(issuer)
        out["serial"] = f"{int.from_bytes(serial.content, 'big'):x}"
    elif sid.tag == 0x80:  # [0] SubjectKeyIdentifier (sign-file -k)
        out["key_id"] = sid.content.hex()
    else:
        raise ValueError(f"unexpected SignerIdentifier tag {sid.tag:#x}")
    out["hash_algorithm"] = _algorithm(digest)
    rest = info[3:]
    if rest and rest[0].tag == 0xA0:  # signedAttrs
        rest = rest[1:]
    if rest:
        out["signature_algorithm"] = _algorithm(rest[0])
    return out


def _algorithm(der: _Der) -> str:
    oid = _oid(der.children()[0].content)
    return _OIDS.get(oid, oid)


# -- signing -------------------------------------------------------------------------------------
def sign_file_path(ws: Workspace) -> Path:
    """The kernel's own sign-file (linux-kbuild ships it as <kdir>/scripts/sign-file), checked."""
    exe = ws.kdir / "scripts" / "sign-file"
    if not exe.is_file():
        raise ToolMissing(f"{exe} not found: the kernel's kbuild tree has no sign-file (Debian "
                          f"ships it in {ws.target.kbuild}; in your own tree run "
                          f"`make -C {ws.kdir} scripts`)")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if "Usage" not in proc.stderr + proc.stdout:  # it runs: no args prints its usage, exit 2
        missing = re.findall(r"(\S+\.so[.0-9]*): cannot open shared object", proc.stderr)
        if missing:
            pkgs = sorted({_LIB_PACKAGES.get(lib, "") for lib in missing} - {""})
            fix = (f"run `apt-get install -y {' '.join(pkgs)}`" if pkgs else
                   f"install the package that ships {', '.join(missing)} "
                   f"(`apt-file search {missing[0]}`)")
            raise ToolMissing(f"{exe} cannot run: {', '.join(missing)} missing: {fix}")
        detail = " ".join(proc.stderr.split())[:200] or f"exit {proc.returncode}"
        glibc = re.search(r"GLIBC_[0-9.]+", proc.stderr)
        if glibc:
            raise ToolMissing(f"{exe} needs {glibc.group(0)}, newer than this host's C library "
                              f"(it is {ws.target.kbuild} of another Debian suite): sign with a "
                              "sign-file built for this host, e.g. a bookworm kernel's kbuild")
        raise SmcpatchError(f"{exe} does not run on this host: {detail}")
    return exe


def _openssl() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        raise ToolMissing(f"openssl is not installed: run `{OPENSSL_INSTALL}` as root")
    return exe


def _is_pem(path: Path) -> bool:
    return b"-----BEGIN" in path.read_bytes()[:4096]


def _public_key(args: list[str], what: str, path: Path) -> str:
    env = {**os.environ, "KBUILD_SIGN_PIN": os.environ.get("KBUILD_SIGN_PIN", "")}
    proc = subprocess.run([_openssl(), *args], capture_output=True, text=True, check=False, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)
    if proc.returncode != 0 or "PUBLIC KEY" not in proc.stdout:
        reason = (proc.stderr.strip().splitlines() or ["openssl failed"])[0]
        raise BadInput(f"cannot read the {what} {path}: {reason}")
    return proc.stdout.strip()


def check_key_matches_cert(key: Path, cert: Path) -> None:
    """BadInput unless ``key`` is the private key of ``cert`` (PEM or DER; compared public keys)."""
    for path, what in ((key, "signing key"), (cert, "certificate")):
        if not path.is_file():
            raise BadInput(f"{what} {path}: no such file")
    key_pub = _public_key(["pkey", "-in", str(key), "-pubout", "-passin", "env:KBUILD_SIGN_PIN",
                           *([] if _is_pem(key) else ["-inform", "DER"])], "private key", key)
    cert_pub = _public_key(["x509", "-in", str(cert), "-noout", "-pubkey",
                            "-inform", "PEM" if _is_pem(cert) else "DER"], "certificate", cert)
    if key_pub != cert_pub:
        raise BadInput(f"key does not match certificate: {key} is not the private key of {cert}")


def kernel_hash(ws: Workspace) -> str:
    """CONFIG_MODULE_SIG_HASH of the kernel (sha256 when unset)."""
    config = build.KernelConfig.read(ws.kernel_config) if ws.kernel_config.is_file() else None
    return (config.get("CONFIG_MODULE_SIG_HASH") if config else None) or "sha256"


def sign_module(ws: Workspace, module: Path, key: Path, cert: Path, out: Path,
                hash_algo: str | None = None) -> Path:
    """Write a signed copy of ``module`` to ``out`` with the kernel's sign-file; return ``out``.

    ``hash_algo`` defaults to the kernel's CONFIG_MODULE_SIG_HASH. A compressed module (.xz/.gz/
    .zst) is decompressed first; ``out`` ending in .xz or .gz is compressed again (signature inside,
    as Debian does). An existing signature is replaced, not stacked. ``module`` is never modified.
    """
    algo = hash_algo or kernel_hash(ws)
    if algo not in HASH_ALGOS:
        raise BadInput(f"unknown hash algorithm {algo}: choose one of {', '.join(HASH_ALGOS)}")
    if not module.is_file():
        raise BadInput(f"{module}: no such file")
    check_key_matches_cert(key, cert)
    exe = sign_file_path(ws)
    data = inspection.load_elf_bytes(module)
    if not data.startswith(b"\x7fELF"):
        raise BadInput(f"{module} is not an ELF module")
    split = split_signature(data, str(module))
    if split is not None:
        data = split[0]
    out = out.expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sign-", dir=out.parent) as tmp:
        unsigned, signed = Path(tmp) / "unsigned.ko", Path(tmp) / "signed.ko"
        unsigned.write_bytes(data)
        env = {**os.environ, "KBUILD_SIGN_PIN": os.environ.get("KBUILD_SIGN_PIN", "")}
        proc = subprocess.run([str(exe), algo, str(key.absolute()), str(cert.absolute()),
                               str(unsigned), str(signed)], capture_output=True, text=True,
                              check=False, env=env, stdin=subprocess.DEVNULL, timeout=120)
        if proc.returncode != 0 or not signed.is_file():
            detail = " ".join((proc.stderr or proc.stdout).split())[:300]
            raise SmcpatchError(f"sign-file failed (exit {proc.returncode}): {detail}")
        raw = signed.read_bytes()
        sig = parse_signature(raw, str(signed))
        if sig is None or sig["hash_algorithm"] != algo:
            raise SmcpatchError(f"sign-file wrote no {algo} signature to {signed}")
        final = Path(tmp) / "final"
        if out.name.endswith(".xz"):
            final.write_bytes(lzma.compress(raw, check=lzma.CHECK_CRC32))
        elif out.name.endswith(".gz"):
            final.write_bytes(gzip.compress(raw, mtime=0))
        else:
            final.write_bytes(raw)
        final.chmod(0o644)
        final.replace(out)
    return out


# -- what the CLI calls --------------------------------------------------------------------------
def describe(sig: dict[str, Any] | None) -> str:
    """One line for people: ``signed by <signer> (sha256, rsaEncryption, 417-byte PKCS#7)``."""
    if sig is None:
        return "unsigned"
    who = sig.get("signer") or (f"key id {sig['key_id']}" if sig.get("key_id") else "unknown")
    return (f"signed by {who} ({sig.get('hash_algorithm')}, {sig.get('signature_algorithm')}, "
            f"{sig.get('signature_bytes')}-byte {sig.get('id_type')})")


def sign_built(cache: Cache, ws: Workspace, module: Path, key: Path, cert: Path,
               hash_algo: str | None = None) -> dict[str, Any]:
    """Sign a built after-module into ``<cache>/signed/<target key>/smc.ko`` (never into the
    build's own cache entry); return {"path", "signature": module_signature(...), "text"}."""
    out = cache.dir("signed", ws.target.key) / "smc.ko"
    signed = sign_module(ws, module, key, cert, out, hash_algo)
    sig = module_signature(signed)
    return {"path": str(signed), "signature": sig, "text": describe(sig)}


def sign_plan(cache: Cache, verified: Sequence[tuple[Workspace | None, TargetReport]],
              key: Path, cert: Path, hash_algo: str | None = None) -> list[dict[str, Any] | None]:
    """Sign the after-module of every verified target (``inv verify --sign-key/--sign-cert``).

    One result per report (None where there is no fixed after-module to sign); each signed module
    also gets a note in its report, and a signing failure becomes the target's error (not ok).
    """
    results: list[dict[str, Any] | None] = []
    for ws, rep in verified:
        if ws is None or rep.after is None or rep.after.verdict != "fixed" or rep.error:
            results.append(None)
            continue
        try:
            result = sign_built(cache, ws, Path(rep.after.path), key, cert, hash_algo)
        except SmcpatchError as exc:
            rep.error = f"signing the after-module failed: {exc.one_line()}"
            rep.finish()  # ok and problems follow the error
            results.append(None)
            continue
        rep.notes.append(f"after-module signed: {result['path']} ({result['text']})")
        results.append(result)
    return results
