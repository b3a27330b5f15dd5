"""A module's appended signature, read: the ELF file followed by the signature blob, a
``struct module_signature`` and the magic string (include/linux/module_signature.h)::

    <ELF> <PKCS#7 DER (sig_len bytes)> <algo hash id_type signer_len key_id_len pad[3] sig_len:be32>
    "~Module signature appended~\\n"

For PKCS#7 signatures (id_type 2, the only kind sign-file writes) the struct's algo/hash/signer
fields are zero: the signer and the digest algorithm live in the PKCS#7 SignedData. They are read
here with a small DER walk (no third-party ASN.1 library): SignerInfo.sid (issuer + serial, or a
subjectKeyIdentifier), SignerInfo.digestAlgorithm and signatureAlgorithm. sign-file does not embed
the certificate, so the signer named is the *issuer* of the signing certificate (for Debian's
modules "Debian Secure Boot CA"; for a self-signed key its own subject). Signing itself is
packaging.signing.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from ..errors import InspectError
from .elf import load_elf_bytes

MAGIC = b"~Module signature appended~\n"
_SIG_STRUCT = struct.Struct(">BBBBB3xI")  # struct module_signature, 12 bytes
PKEY_ID_PGP, PKEY_ID_X509, PKEY_ID_PKCS7 = 0, 1, 2
ID_TYPES = {PKEY_ID_PGP: "PGP", PKEY_ID_X509: "X509", PKEY_ID_PKCS7: "PKCS#7"}
HASH_ALGOS = ("sha1", "sha224", "sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512")
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
    return parse_signature(load_elf_bytes(path), str(path))


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


# -- a minimal DER reader ------------------------------------------------------------------------
class _Der:
    """One TLV: tag byte, content bytes."""

    __slots__ = ("tag", "content")

    def __init__(self, tag: int, content: bytes) -> None:
        self.tag, self.content = tag, content

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


def describe(sig: dict[str, Any] | None) -> str:
    """One line for people: ``signed by <signer> (sha256, rsaEncryption, 417-byte PKCS#7)``."""
    if sig is None:
        return "unsigned"
    who = sig.get("signer") or (f"key id {sig['key_id']}" if sig.get("key_id") else "unknown")
    return (f"signed by {who} ({sig.get('hash_algorithm')}, {sig.get('signature_algorithm')}, "
            f"{sig.get('signature_bytes')}-byte {sig.get('id_type')})")
