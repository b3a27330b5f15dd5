"""Module signing (smcpatch.packaging.signing): the kernel's sign-file; appended signatures.

Unit tests build signatures with openssl itself (a detached DER PKCS#7 over a small file, appended
the way sign-file appends it) and compare what the DER reader finds with openssl's own view.
Integration tests read Debian's signed modules and sign real modules with a throwaway key using
the kernel's sign-file from the extracted linux-kbuild package.
"""

from __future__ import annotations

import gzip
import lzma
import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch.errors import BadInput, InspectError, ToolMissing
from smcpatch.inspection import signature
from smcpatch.kernels.matrix import load_matrix
from smcpatch.packaging import signing
from smcpatch.pipeline.fetch import Workspace

GENKEY = """\
[ req ]
default_bits = 2048
distinguished_name = req_distinguished_name
prompt = no
string_mask = utf8only
x509_extensions = myexts
[ req_distinguished_name ]
O = smcpatch tests
CN = {cn}
[ myexts ]
basicConstraints=critical,CA:FALSE
keyUsage=digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def make_key(directory: Path, cn: str = "smcpatch throwaway key") -> tuple[Path, Path]:
    """A throwaway module signing key + certificate, with the kernel's x509.genkey extensions."""
    directory.mkdir(parents=True, exist_ok=True)
    conf, key, cert = directory / "x509.genkey", directory / "key.pem", directory / "cert.pem"
    conf.write_text(GENKEY.format(cn=cn))
    subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "1",
                    "-batch", "-x509", "-config", str(conf), "-outform", "PEM",
                    "-out", str(cert), "-keyout", str(key)], check=True, capture_output=True)
    return key, cert


def openssl_serial(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-serial"],
                         check=True, capture_output=True, text=True).stdout
    return format(int(out.strip().split("=")[1], 16), "x")


def fake_signed(tmp_path: Path, key: Path, cert: Path, md: str = "sha384",
                content: bytes = b"\x7fELF not really a module\n" * 10) -> bytes:
    """content + a detached DER PKCS#7 (as sign-file writes it) + module_signature + magic."""
    (tmp_path / "content").write_bytes(content)
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap",
                    "-outform", "DER", "-md", md, "-signer", str(cert), "-inkey", str(key),
                    "-in", str(tmp_path / "content"), "-out", str(tmp_path / "sig.der")],
                   check=True, capture_output=True)
    blob = (tmp_path / "sig.der").read_bytes()
    return content + blob + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(blob)) + signature.MAGIC


def _fake_ws(kdir: Path) -> Workspace:
    target = next(t for t in load_matrix() if t.version == "6.1.176")
    return Workspace(target=target, kdir=kdir, source_tree=kdir, shipped_module=None,
                     image_deb=None)


# -- reading signatures --------------------------------------------------------------------------
def test_parse_openssl_made_signature(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, cert = keys
    data = fake_signed(tmp_path, key, cert, md="sha384")
    sig = signature.parse_signature(data)
    assert sig is not None
    assert sig["signer"] == "smcpatch throwaway key"
    assert sig["issuer"] == "O=smcpatch tests, CN=smcpatch throwaway key"
    assert sig["serial"] == openssl_serial(cert)
    assert sig["hash_algorithm"] == "sha384"
    assert sig["signature_algorithm"] == "rsaEncryption"
    assert sig["id_type"] == "PKCS#7"
    assert sig["key_id"] is None
    assert sig["signature_bytes"] == (tmp_path / "sig.der").stat().st_size
    split = signature.split_signature(data)
    assert split is not None and split[0] == (tmp_path / "content").read_bytes()


def test_parse_keyid_signer(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """sign-file -k style: the SignerInfo names the subjectKeyIdentifier, not issuer+serial."""
    key, cert = keys
    (tmp_path / "c").write_bytes(b"module")
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-keyid",
                    "-outform", "DER", "-md", "sha256", "-signer", str(cert), "-inkey", str(key),
                    "-in", str(tmp_path / "c"), "-out", str(tmp_path / "s")],
                   check=True, capture_output=True)
    blob = (tmp_path / "s").read_bytes()
    data = b"module" + blob + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(blob)) + signature.MAGIC
    sig = signature.parse_signature(data)
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext",
                           "subjectKeyIdentifier"], check=True, capture_output=True,
                          text=True).stdout
    skid = re.sub(r"[^0-9a-f]", "", text.splitlines()[-1].lower())
    assert sig is not None and sig["key_id"] == skid and sig["signer"] is None
    assert sig["hash_algorithm"] == "sha256"


@pytest.mark.parametrize("suffix,compress", [(".ko", bytes), (".ko.xz", lzma.compress),
                                             (".ko.gz", gzip.compress)])
def test_module_signature_compressed(tmp_path: Path, keys: tuple[Path, Path], suffix: str,
                                     compress: Callable[[bytes], bytes]) -> None:
    data = fake_signed(tmp_path, *keys, md="sha256")
    path = tmp_path / f"smc{suffix}"
    path.write_bytes(compress(data))
    sig = signature.module_signature(path)
    assert sig is not None and sig["signer"] == "smcpatch throwaway key"


def test_unsigned_is_none(tmp_path: Path) -> None:
    (tmp_path / "m.ko").write_bytes(b"\x7fELF" + b"\0" * 100)
    assert signature.module_signature(tmp_path / "m.ko") is None
    assert signing.verify_signature(tmp_path / "m.ko", tmp_path / "none.pem") is False


def test_truncated_and_malformed(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(InspectError, match="truncated module signature"):
        signature.parse_signature(b"\0" * 4 + signature.MAGIC, "m.ko")
    huge = b"\x7fELF" + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 10_000) + signature.MAGIC
    with pytest.raises(InspectError, match="length 10000 does not fit"):
        signature.parse_signature(huge, "m.ko")
    junk = b"\x7fELF" + b"\x30\x03\x02\x01" + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 4) \
        + signature.MAGIC
    with pytest.raises(InspectError, match="malformed PKCS#7"):
        signature.parse_signature(junk, "m.ko")
    good = fake_signed(tmp_path, *keys)
    end = len(good) - len(signature.MAGIC) - 12
    cut = good[:end - 40] + good[end:]  # drop 40 bytes of the DER blob, keep its declared length
    with pytest.raises(InspectError):
        signature.parse_signature(cut, "m.ko")


# -- key / certificate checks --------------------------------------------------------------------
def test_key_matches_cert(tmp_path: Path, keys: tuple[Path, Path],
                          other_keys: tuple[Path, Path]) -> None:
    key, cert = keys
    signing.check_key_matches_cert(key, cert)
    der = tmp_path / "cert.der"
    subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER", "-out", str(der)],
                   check=True)
    signing.check_key_matches_cert(key, der)  # sign-file takes DER certificates too
    with pytest.raises(BadInput, match="key does not match certificate"):
        signing.check_key_matches_cert(key, other_keys[1])
    with pytest.raises(BadInput, match="no such file"):
        signing.check_key_matches_cert(tmp_path / "missing.pem", cert)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(BadInput, match="cannot read the certificate"):
        signing.check_key_matches_cert(key, tmp_path / "junk.pem")
    with pytest.raises(BadInput, match="cannot read the private key"):
        signing.check_key_matches_cert(tmp_path / "junk.pem", cert)


def test_sign_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="linux-kbuild-6.1"):
        signing.sign_file_path(_fake_ws(tmp_path))


def test_sign_file_missing_library(tmp_path: Path) -> None:
    script = tmp_path / "scripts" / "sign-file"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho 'scripts/sign-file: error while loading shared libraries: "
                      "libcrypto.so.3: cannot open shared object file: No such file or directory'"
                      " >&2\nexit 127\n")
    script.chmod(0o755)
    with pytest.raises(ToolMissing, match=r"libcrypto.so.3 missing: run `apt-get install -y "
                                          r"libssl3`"):
        signing.sign_file_path(_fake_ws(tmp_path))


def test_bad_hash(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(BadInput, match="unknown hash algorithm md5"):
        signing.sign_module(_fake_ws(tmp_path), tmp_path / "m.ko", *keys, tmp_path / "o.ko",
                            "md5")


def test_describe(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    assert signature.describe(None) == "unsigned"
    sig = signature.parse_signature(fake_signed(tmp_path, *keys, md="sha256"))
    assert signature.describe(sig) == (f"signed by smcpatch throwaway key (sha256, rsaEncryption, "
                                     f"{(tmp_path / 'sig.der').stat().st_size}-byte PKCS#7)")
