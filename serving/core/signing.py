"""Signed model packages: an Ed25519 signature of ``manifest.json``, kept next to it in ``manifest.sig``.

The manifest holds the sha256 of every other file of the package, so signing its bytes signs the whole
package: a file edited after signing fails its checksum, and a manifest edited to match fails the
signature. A server given trusted public keys (``rnnmt serve --trusted-keys``) loads only packages
signed by one of them. Keys are PEM files: the private key PKCS#8 (``rnnmt keys new`` writes one, mode
0600), the public key SubjectPublicKeyInfo. A key is named by its *key id*, the first 16 hex digits of
the sha256 of its raw 32 bytes.

``manifest.sig`` is JSON: ``{"algorithm": "ed25519", "key_id": ..., "signature": base64}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rnnmt.errors import RnnmtError

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_key(private_path: Path) -> Path:
    """Write a new private key to ``private_path`` (mode 0600, never overwriting) and its public key
    next to it with the suffix ``.pub``; returns the public key's path."""
    key = Ed25519PrivateKey.generate()
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise RnnmtError(f"{path} already exists; choose another name")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise RnnmtError(f"signing key not found: {path}") from None
    except (ValueError, TypeError) as exc:
        raise RnnmtError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RnnmtError(f"{path} is not an Ed25519 private key (rnnmt keys new writes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise RnnmtError(f"public key not found: {path}") from None
    except (ValueError, TypeError) as exc:
        raise RnnmtError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise RnnmtError(f"{path} is not an Ed25519 public key")
    return key


class TrustedKeys:
    """The public keys a server accepts package signatures from: a ``.pub`` file, or a folder of them."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], source: str) -> None:
        self.keys = keys
        self.source = source

    @classmethod
    def load(cls, path: Path) -> TrustedKeys:
        path = Path(path)
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        keys = {key_id(key): key for key in map(load_public_key, files)}
        if not keys:
            raise RnnmtError(f"no public keys (*.pub) in {path}")
        return cls(keys, str(path))

    def verify(self, package_root: Path, manifest_bytes: bytes) -> str:
        """Check the package's signature of ``manifest_bytes``; returns the signing key's id."""
        signature_path = package_root / SIGNATURE_FILE
        if not signature_path.is_file():
            raise RnnmtError(
                f"model package {package_root} is not signed ({SIGNATURE_FILE} is missing); this server "
                f"accepts only packages signed by a key of {self.source}"
            )
        try:
            record = json.loads(signature_path.read_text(encoding="utf-8"))
            algorithm, signer, signature = record["algorithm"], record["key_id"], record["signature"]
            raw = base64.b64decode(signature, validate=True)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
            raise RnnmtError(f"{signature_path} is not a package signature: {exc!r}") from exc
        if algorithm != ALGORITHM:
            raise RnnmtError(f"{signature_path} uses {algorithm!r}; rnnmt signs with {ALGORITHM}")
        key = self.keys.get(signer)
        if key is None:
            raise RnnmtError(
                f"model package {package_root} is signed by key {signer}, which is not among the trusted "
                f"keys ({', '.join(self.keys)} from {self.source})"
            )
        try:
            key.verify(raw, manifest_bytes)
        except InvalidSignature:
            raise RnnmtError(
                f"the signature of model package {package_root} does not match its manifest: the package "
                "was changed after it was signed"
            ) from None
        return signer


def sign_package(package_root: Path, private_key: Path) -> str:
    """Sign the package's ``manifest.json`` with ``private_key`` (replacing an earlier signature);
    returns the key id. The package is verified first and the manifest bytes verified are signed, so only
    an intact package gets signed."""
    from rnnmt.serving.core.package import MANIFEST_FILE, read_package

    key = load_private_key(private_key)
    manifest_bytes = read_package(package_root)[1][MANIFEST_FILE]
    signer = key_id(key.public_key())
    record = {
        "algorithm": ALGORITHM,
        "key_id": signer,
        "signature": base64.b64encode(key.sign(manifest_bytes)).decode("ascii"),
    }
    temporary = package_root / f".{SIGNATURE_FILE}.tmp"
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, package_root / SIGNATURE_FILE)
    return signer
