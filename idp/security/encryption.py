"""Encryption at rest for private signing keys and TOTP seeds.

AES-256-GCM under the configured key-encryption key (KEK). The stored form names the KEK by a
short fingerprint so older KEKs listed in ``secrets.previous_key_encryption_keys`` still decrypt
after the KEK is rotated. Associated data binds each ciphertext to its row (e.g. the key id), so
a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class DecryptionError(Exception):
    """The ciphertext can't be decrypted with any configured key (wrong KEK, or tampered data)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(kek: bytes) -> str:
    return hashlib.sha256(b"idp-kek-fingerprint" + kek).hexdigest()[:12]


class Encryptor:
    def __init__(self, current: bytes, previous: list[bytes] | None = None) -> None:
        if len(current) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        # AESGCM also takes 16- and 24-byte keys; an older KEK must be AES-256 too.
        if any(len(key) != 32 for key in previous or []):
            raise ValueError("every previous key-encryption key must be 32 bytes")
        self._current = current
        self._keys = {fingerprint(key): key for key in [*(previous or []), current]}

    @property
    def current_fingerprint(self) -> str:
        return fingerprint(self._current)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> str:
        nonce = os.urandom(12)
        ciphertext = AESGCM(self._current).encrypt(nonce, plaintext, associated_data)
        return ".".join((_VERSION, fingerprint(self._current), _b64(nonce), _b64(ciphertext)))

    def decrypt(self, token: str, associated_data: bytes) -> bytes:
        try:
            version, kek_id, nonce, ciphertext = token.split(".")
        except ValueError:
            raise DecryptionError("malformed ciphertext") from None
        if version != _VERSION:
            raise DecryptionError(f"unknown ciphertext version {version!r}")
        key = self._keys.get(kek_id)
        if key is None:
            raise DecryptionError(
                f"encrypted under key-encryption key {kek_id}, which is not configured "
                "(add it to secrets.previous_key_encryption_keys)"
            )
        try:
            return AESGCM(key).decrypt(_unb64(nonce), _unb64(ciphertext), associated_data)
        except (InvalidTag, ValueError):
            raise DecryptionError("ciphertext failed authentication (tampered, or bound to another row)") from None

    def needs_reencryption(self, token: str) -> bool:
        parts = token.split(".")
        return len(parts) != 4 or parts[1] != self.current_fingerprint
