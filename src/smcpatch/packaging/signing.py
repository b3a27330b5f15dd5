"""Module signing: sign a module with the kernel's own sign-file (never into a build's own cache
entry), check a key against its certificate, verify a signature with openssl. Reading an appended
signature is inspection.signature."""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import inspection
from ..errors import BadInput, SmcpatchError, ToolMissing
from ..inspection.signature import (
    HASH_ALGOS,
    describe,
    module_signature,
    parse_signature,
    split_signature,
)
from ..kernels.kconfig import KernelConfig
from ..pipeline.fetch import Workspace
from ..pipeline.report import TargetReport
from ..plumbing import proc
from ..plumbing.cache import Cache
from ..plumbing.files import TMP_PREFIX

OPENSSL_INSTALL = "apt-get install -y openssl"
# Shared libraries sign-file links, and the Debian package that ships each (bookworm names).
_LIB_PACKAGES = {"libcrypto.so.3": "libssl3", "libssl.so.3": "libssl3",
                 "libcrypto.so.1.1": "libssl1.1", "libc.so.6": "libc6"}


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
        done = proc.run(
            [_openssl(), "cms", "-verify", "-binary", "-inform", "DER", "-in", f"{tmp}/sig.der",
             "-content", f"{tmp}/content", "-certfile", str(cert), "-nointern", "-noverify",
             "-out", "/dev/null"], capture_output=True, text=True, timeout=60,
            what="openssl cms -verify")
    return done.returncode == 0



# -- signing -------------------------------------------------------------------------------------
def sign_file_path(ws: Workspace) -> Path:
    """The kernel's own sign-file (linux-kbuild ships it as <kdir>/scripts/sign-file), checked."""
    exe = ws.kdir / "scripts" / "sign-file"
    if not exe.is_file():
        raise ToolMissing(f"{exe} not found: the kernel's kbuild tree has no sign-file (Debian "
                          f"ships it in {ws.target.kbuild}; in your own tree run "
                          f"`make -C {ws.kdir} scripts`)")
    done = proc.run([str(exe)], capture_output=True, text=True, timeout=60, what=str(exe))
    if "Usage" not in done.stderr + done.stdout:  # it runs: no args prints its usage, exit 2
        missing = re.findall(r"(\S+\.so[.0-9]*): cannot open shared object", done.stderr)
        if missing:
            pkgs = sorted({_LIB_PACKAGES.get(lib, "") for lib in missing} - {""})
            fix = (f"run `apt-get install -y {' '.join(pkgs)}`" if pkgs else
                   f"install the package that ships {', '.join(missing)} "
                   f"(`apt-file search {missing[0]}`)")
            raise ToolMissing(f"{exe} cannot run: {', '.join(missing)} missing: {fix}")
        detail = " ".join(done.stderr.split())[:200] or f"exit {done.returncode}"
        glibc = re.search(r"GLIBC_[0-9.]+", done.stderr)
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
    done = proc.run([_openssl(), *args], capture_output=True, text=True, env=env, timeout=60,
                    what="openssl")
    if done.returncode != 0 or "PUBLIC KEY" not in done.stdout:
        reason = (done.stderr.strip().splitlines() or ["openssl failed"])[0]
        raise BadInput(f"cannot read the {what} {path}: {reason}")
    return str(done.stdout).strip()


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
    config = KernelConfig.read(ws.kernel_config) if ws.kernel_config.is_file() else None
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
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}sign-", dir=out.parent) as tmp:
        unsigned, signed = Path(tmp) / "unsigned.ko", Path(tmp) / "signed.ko"
        unsigned.write_bytes(data)
        env = {**os.environ, "KBUILD_SIGN_PIN": os.environ.get("KBUILD_SIGN_PIN", "")}
        done = proc.run([str(exe), algo, str(key.absolute()), str(cert.absolute()),
                         str(unsigned), str(signed)], capture_output=True, text=True,
                        env=env, timeout=120, what="sign-file")
        if done.returncode != 0 or not signed.is_file():
            detail = " ".join((done.stderr or done.stdout).split())[:300]
            raise SmcpatchError(f"sign-file failed (exit {done.returncode}): {detail}")
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
