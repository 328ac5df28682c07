"""cosign key files: encrypted private keys (scrypt + nacl/secretbox over PKCS#8) and SPKI PEMs.

Both PEM labels cosign has used are read: ``ENCRYPTED SIGSTORE PRIVATE KEY`` (current, written
by ``keys generate``) and ``ENCRYPTED COSIGN PRIVATE KEY`` (older cosign).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from promoter.signing.errors import CorruptKey, WrongKeyPassword

PRIVATE_LABELS = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
WRITE_LABEL = PRIVATE_LABELS[0]
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\s*(.*?)\s*-----END \1-----", re.S)
_SCRYPT_N = (32768, 65536, 131072)


@dataclass(frozen=True)
class PublicKey:
    key: ec.EllipticCurvePublicKey

    @property
    def spki_der(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def hint(self) -> str:
        """cosign/sigstore key hint: base64(sha256(SPKI DER))."""
        return base64.b64encode(hashlib.sha256(self.spki_der).digest()).decode()

    def pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    key: ec.EllipticCurvePrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256, ASN.1 DER (what cosign writes)."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    blocks = []
    for label, body in _PEM.findall(text):
        try:
            blocks.append((label, base64.b64decode("".join(body.split()), validate=True)))
        except (binascii.Error, ValueError):
            raise CorruptKey(f"the {label} block is not valid base64") from None
    return blocks


def _scrypt_key(kdf: dict[str, Any], password: str) -> bytes:
    params = kdf.get("params", {})
    n, r, p = int(params.get("N", 0)), int(params.get("r", 0)), int(params.get("p", 0))
    if kdf.get("name") != "scrypt" or n not in _SCRYPT_N or r != 8 or p != 1:
        raise CorruptKey(f"unsupported key derivation {kdf.get('name')!r} N={n} r={r} p={p}")
    salt = base64.b64decode(kdf["salt"])
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=256 * 1024 * 1024)


def load_signing_key(data: bytes, password: str, *, name: str = "key") -> SigningKey:
    """Decrypt a cosign private key file. Wrong password and damaged file are told apart."""
    text = data.decode("utf-8", errors="replace")
    blocks = [(label, body) for label, body in _pem_blocks(text) if label in PRIVATE_LABELS]
    if not blocks:
        raise CorruptKey(f"{name} is not a cosign private key (no ENCRYPTED SIGSTORE/COSIGN "
                         "PRIVATE KEY block)",
                         hint="pass the .key file made by `promoter keys generate` or "
                              "`cosign generate-key-pair`, not the .pub")
    try:
        envelope = json.loads(blocks[0][1])
        box_key = _scrypt_key(envelope["kdf"], password)
        cipher = envelope["cipher"]
        if cipher.get("name") != "nacl/secretbox":
            raise CorruptKey(f"{name} uses unsupported cipher {cipher.get('name')!r}")
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(envelope["ciphertext"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise CorruptKey(f"{name} is damaged: its encrypted envelope cannot be read",
                         hint="restore the key file from where it was generated") from None
    try:
        plaintext = nacl.secret.SecretBox(box_key).decrypt(ciphertext, nonce)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        # secretbox authenticates: a wrong password and a flipped ciphertext byte look alike,
        # but the envelope parsed, so the password is by far the likelier cause.
        raise WrongKeyPassword(f"cannot decrypt {name}: wrong password",
                               hint="set COSIGN_PASSWORD to the password the key was "
                                    "generated with (empty if none)") from None
    try:
        key = serialization.load_der_private_key(plaintext, password=None)
    except ValueError:
        raise CorruptKey(f"{name} decrypted but does not hold a PKCS#8 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CorruptKey(f"{name} holds a key that is not ECDSA P-256",
                         hint="promoter signs with ECDSA P-256 keys, as cosign generates")
    return SigningKey(key)


def load_public_key(data: bytes, *, name: str = "public key") -> PublicKey:
    blocks = [body for label, body in _pem_blocks(data.decode("utf-8", errors="replace"))
              if label == "PUBLIC KEY"]
    if not blocks:
        raise CorruptKey(f"{name} is not a PUBLIC KEY PEM",
                         hint="pass the .pub file next to the cosign .key")
    try:
        key = serialization.load_der_public_key(blocks[0])
    except ValueError:
        raise CorruptKey(f"{name} is damaged: the PUBLIC KEY block is not a valid key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CorruptKey(f"{name} is not an ECDSA public key")
    return PublicKey(key)


def encrypt_signing_key(key: SigningKey, password: str, *, scrypt_n: int = 65536) -> bytes:
    """The cosign private key file for ``key`` (label ENCRYPTED SIGSTORE PRIVATE KEY)."""
    salt, nonce = os.urandom(32), os.urandom(24)
    kdf = {"name": "scrypt", "params": {"N": scrypt_n, "r": 8, "p": 1},
           "salt": base64.b64encode(salt).decode()}
    plaintext = key.key.private_bytes(serialization.Encoding.DER,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    box = nacl.secret.SecretBox(_scrypt_key(kdf, password))
    sealed = box.encrypt(plaintext, nonce).ciphertext
    envelope = {"kdf": kdf, "cipher": {"name": "nacl/secretbox",
                                       "nonce": base64.b64encode(nonce).decode()},
                "ciphertext": base64.b64encode(sealed).decode()}
    body = base64.b64encode(json.dumps(envelope, separators=(",", ":")).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {WRITE_LABEL}-----\n" + "\n".join(lines)
            + f"\n-----END {WRITE_LABEL}-----\n").encode()


def generate_key_pair(password: str) -> tuple[bytes, bytes]:
    key = SigningKey(ec.generate_private_key(ec.SECP256R1()))
    return encrypt_signing_key(key, password), key.public.pem()


def read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CorruptKey(f"cannot read key file {path}: {exc.strerror}") from None
